"""The NNI driver: an NNI experiment on the local training service, watched in the web UI.

Tuners: NNI's built-in ones that work here (TPE, Evolution, Anneal, Random, GridSearch) run on
the scalarized objective behind :class:`GuardedTuner` (seeds first, TPE's race survived);
``MultiObjective`` runs Optuna's NSGA-II (or TPE) as a real Pareto search. Tuners that cannot
work with NNI 3.0 on this stack are refused before anything is created, with the reason; both keep
their state in the run directory, so a resumed search never reruns a finished policy.

Trials: NNI's trial command is a thin client (:mod:`.nni_client`) handing each trial to one of
``budget.concurrency`` warm workers (:mod:`.nni_worker`), which the launcher starts before the
manager and ends after it (``nni_trials: cold`` runs a new process per trial instead). The manager
starts bound to the configured host, polls its trials every 0.1 s and dies with the launcher
(:mod:`.nni_manager`); ``manager.json`` records it (:mod:`.nni_manager_record`), so that ``stop``
asks the running launcher (running trials finish, no new one starts) and ``resume`` after a crash
ends what the dead launcher left before it starts again.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import requests
import yaml
from nni.experiment import CustomAlgorithmConfig, Experiment
from nni.experiment import launcher as nni_launcher
from nni.tools.nnictl.config_utils import Experiments

from ...objectives import feasible
from ..config import ConfigError, ExperimentConfig
from ..progress import Progress, TrialCounts
from ..runs import STOP_FILE, launch_directory
from ..samplers import TUNER_SAMPLERS
from ..setup import ExperimentSetup
from ..trial_records import SEEDS_FILE, read_trial_records
from ..workers.pool import WorkerPool
from ..workers.processes import ProcessRecord
from ..workers.slots import Slots
from .base import Driver
from .nni_client import trial_command, worker_command
from .nni_evaluation import CONCURRENCY_VARIABLE
from .nni_manager import POLL_SECONDS, POLL_VARIABLE, manager_start, preload_option, print_web_ui, write_preloads
from .nni_manager_record import (
    NNI_DIR,
    ManagerRecord,
    clear_manager_record,
    end_managers,
    read_manager_record,
    write_manager_record,
)
from .nni_tuners.mpqsearch_tuners import BUILTIN_TUNERS

TUNER_DIR = Path(__file__).parent / "nni_tuners"
MULTI_OBJECTIVE = "MultiObjective"
REFUSED = {
    "GP": "crashes after its warm-up with SciPy >= 1.17 ('x0' must only have one dimension)",
    "Metis": "crashes after its warm-up with SciPy >= 1.17 ('x0' must only have one dimension)",
    "Hyperband": "crashes on the first metric in NNI 3.0 (issue #5263)",
    "BOHB": "crashes on the first metric in NNI 3.0 (issue #5263)",
    "SMAC": "cannot be installed (its ConfigSpaceNNI dependency fails to build)",
    "PBT": "needs trials that checkpoint and resume training; a quantization trial has nothing to resume",
    "Batch": "runs a fixed list of parameters; use seed strategies instead",
    "DNGO": "not supported: needs pybnn, which is unmaintained",
}
FINISHED_STATES = ("DONE", "STOPPED", "ERROR", "NO_MORE_TRIAL")
TUNER_STATE_FILES = {MULTI_OBJECTIVE: "tuner.journal", "guarded": "tuner-handed-out.jsonl"}
"""The tuner's memory in the run directory (see :mod:`.nni_tuners.mpqsearch_tuners`)."""


def tuner_config(setup: ExperimentSetup, seeds: list[dict[str, Any]], run_dir: Path) -> CustomAlgorithmConfig:
    config = setup.config
    if config.tuner.name == MULTI_OBJECTIVE:
        args = dict(config.tuner.args)
        class_args = {
            "objectives": [[o.metric, o.direction] for o in setup.objectives.objectives],
            "constraints": [[c.metric, c.max, c.min] for c in setup.objectives.constraints],
            "sampler": args.pop("sampler", "NSGAII"), "sampler_args": args, "seeds": seeds,
            "state_file": str(run_dir / TUNER_STATE_FILES[MULTI_OBJECTIVE]),
        }
        class_name = "mpqsearch_tuners.MultiObjectiveTuner"
    else:
        class_args = {"tuner": config.tuner.name, "tuner_args": dict(config.tuner.args), "seeds": seeds,
                      "optimize_mode": setup.objectives.directions[0],
                      "state_file": str(run_dir / TUNER_STATE_FILES["guarded"])}
        class_name = "mpqsearch_tuners.GuardedTuner"
    return CustomAlgorithmConfig(name=None, class_name=class_name, code_directory=str(TUNER_DIR),
                                 class_args=class_args)


class NniDriver(Driver):
    """Starts, resumes, views and stops NNI experiments whose files live in ``run_dir``."""

    name = "nni"

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        super().__init__(config, experiment_id, run_dir)
        self._experiment: Experiment | None = None
        self._manager: ProcessRecord | None = None

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """Refuse, with the reason, a tuner that cannot work here, and an interpreter NNI cannot start."""
        if any(c.isspace() for c in sys.executable):
            raise ConfigError(f"the Python interpreter's path {sys.executable!r} holds a space, and NNI's manager "
                              "starts its tuner through a shell without quoting it: use a Python (or virtual "
                              "environment) at a path without spaces")
        name = config.tuner.name
        if name in REFUSED:
            raise ConfigError(f"{config.source}: tuner.name: {name} cannot be used: {REFUSED[name]}")
        if name not in BUILTIN_TUNERS and name != MULTI_OBJECTIVE:
            raise ConfigError(f"{config.source}: tuner.name: unknown tuner {name!r} "
                              f"(available: {', '.join([*BUILTIN_TUNERS, MULTI_OBJECTIVE])})")
        if name == MULTI_OBJECTIVE and config.tuner.args.get("sampler", "NSGAII") not in TUNER_SAMPLERS:
            raise ConfigError(f"{config.source}: tuner.args.sampler: must be one of {', '.join(TUNER_SAMPLERS)}")

    @property
    def multi_objective(self) -> bool:
        return self.config.tuner.name == MULTI_OBJECTIVE

    @property
    def warm(self) -> bool:
        return self.config.nni_trials == "warm"

    def build(self, setup: ExperimentSetup) -> Experiment:
        """The NNI experiment: search space, trial command, budget, tuner with the seeds first."""
        seeds = [{"params": setup.space.params_from_policy(p), "strategy": p.provenance["strategy"]}
                 for p in setup.seeds()]
        (self.run_dir / SEEDS_FILE).write_text(json.dumps(seeds, indent=1))
        experiment = Experiment("local", id=self.experiment_id)
        c = experiment.config
        c.experiment_name = self.config.name or self.experiment_id
        c.search_space = setup.space.to_nni()
        c.trial_command = trial_command(self.run_dir, self.warm, self.config.budget.trial_timeout_seconds)
        c.trial_code_directory = str(self.run_dir)
        c.trial_concurrency = self.config.budget.concurrency
        c.max_trial_number = self.config.budget.max_trials
        if self.config.budget.max_seconds:
            c.max_experiment_duration = f"{int(self.config.budget.max_seconds)}s"
        c.experiment_working_directory = str(self.run_dir / NNI_DIR)
        c.tuner = tuner_config(setup, [s["params"] for s in seeds], self.run_dir)
        c.training_service.use_active_gpu = False
        self.write_nnictl_config(experiment)
        return experiment

    def write_nnictl_config(self, experiment: Experiment) -> Path:
        """The same experiment as ``config.yml`` for ``nnictl create --config`` (trials start the
        warm workers they need; the preloads are optional there)."""
        write_preloads(self.run_dir)
        data = experiment.config.json()
        path = self.run_dir / "config.yml"
        header = ("# nnictl create --config config.yml --port PORT\n"
                  f"# to keep the web UI on {self.config.host} and poll trials every {POLL_SECONDS} s, first:\n"
                  f"#   export NODE_OPTIONS={shlex.quote(preload_option(self.run_dir))} "
                  f"{POLL_VARIABLE}={POLL_SECONDS}\n")
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        return path

    def launch(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        self._refuse_busy_port()
        with self._workers():
            setup.warm_up()  # meanwhile the workers import torch and build their own setup
            setup.record(self.run_dir)
            experiment = self.build(setup)
            self._start(experiment, lambda: experiment.start(self.config.port))
            self._wait(experiment, progress, out)

    def resume(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        record = read_manager_record(self.run_dir)
        if record and record.launcher and record.launcher.pid != os.getpid() and record.launcher.alive():
            raise ConfigError(f"experiment {self.experiment_id} is running (launcher pid {record.launcher.pid}); "
                              f"stop it first: mpqsearch stop {self.experiment_id}")
        for pid in end_managers(self.run_dir, self.experiment_id):
            print(f"  ended NNI manager {pid}, left running by an interrupted launch", file=out)
        self._refuse_busy_port()
        setup.record(self.run_dir)
        with self._workers():
            experiment = self._stopped_experiment()
            self._start(experiment, lambda: experiment.resume(self.config.port, wait_completion=False))
            experiment.update_max_trial_number(self.config.budget.max_trials)  # a stop had lowered it
            self._wait(experiment, progress, out)

    def _stopped_experiment(self) -> Experiment:
        """The experiment as NNI stored it in the run directory (NNI's list of experiments, shared
        by every experiment of the user, may say it runs, or not know it: it is not needed)."""
        experiment = Experiment(None, id=self.experiment_id)
        experiment.config = nni_launcher.get_stopped_experiment_config(self.experiment_id, self.run_dir / NNI_DIR)
        if not experiment.has_checkpoint():
            Experiments().add_experiment(self.experiment_id, self.config.port, int(time.time() * 1000), "local",
                                         experiment.config.experiment_name, status="STOPPED",
                                         logDir=str(self.run_dir / NNI_DIR))
        return experiment

    def _trial_environment(self) -> dict[str, str]:
        """What the manager passes on to trials: how many run at once (their share of the cores),
        and the launch directory first on their import path (for ``module:function`` references)."""
        path = os.pathsep.join(filter(None, [launch_directory(self.run_dir), os.environ.get("PYTHONPATH")]))
        return {CONCURRENCY_VARIABLE: str(self.config.budget.concurrency), "PYTHONPATH": path}

    @contextmanager
    def _workers(self) -> Iterator[None]:
        """Inside the block, the warm workers run (started ahead, ended after, however it ends)."""
        if not self.warm:
            yield
            return
        pool = WorkerPool(Slots(self.run_dir), worker_command(self.run_dir),
                          {**os.environ, **self._trial_environment()})
        try:
            pool.start(self.config.budget.concurrency)
            yield
        finally:
            pool.close()

    def _refuse_busy_port(self) -> None:
        with socket.socket() as probe:
            busy = probe.connect_ex(("localhost", self.config.port)) == 0
        if busy:
            raise ConfigError(_busy_port(self.config))

    def _start(self, experiment: Experiment, start: Callable[[], Any]) -> None:
        """Start (or resume) the manager and record it (``manager.json``)."""
        with manager_start(self.run_dir, self.config.host, self._trial_environment()) as handle:
            try:
                start()
            except RuntimeError as err:
                if "is not idle" in str(err):  # taken between our check and NNI's
                    raise ConfigError(_busy_port(self.config)) from None
                raise
        self._manager = handle.process
        if handle.process is not None:
            write_manager_record(self.run_dir, ManagerRecord(self.experiment_id, handle.process, self.config.port,
                                                             ProcessRecord.of(os.getpid())))

    def view(self, port: int | None) -> None:
        """Serve the web UI of a finished experiment until interrupted (Ctrl-C)."""
        with manager_start(self.run_dir, self.config.host):
            self._stopped_experiment().view(port or self.config.port)

    def stop(self) -> None:
        """Ask the launcher to stop (running trials finish, no new one starts); with no launcher
        alive (``nnictl create``, or one that died), end the experiment's manager."""
        (self.run_dir / STOP_FILE).write_text("stop requested\n")
        record = read_manager_record(self.run_dir)
        if not (record and record.launcher and record.launcher.alive()):
            end_managers(self.run_dir, self.experiment_id)

    def counts(self) -> TrialCounts:
        done = [r for r in read_trial_records(self.run_dir).values() if r.get("state") == "SUCCEEDED"]
        try:
            stats = {s["trialJobStatus"]: s["trialJobNumber"] for s in self._experiment.get_job_statistics()}
        except Exception:
            stats = {}
        return TrialCounts(stats.get("SUCCEEDED", len(done)), stats.get("FAILED", 0) + stats.get("SYS_CANCELED", 0),
                           stats.get("RUNNING", 0), [r["values"] for r in done if feasible(r.get("violations"))])

    def _wait(self, experiment: Experiment, progress: Progress, out: TextIO, poll: float = 1.0) -> None:
        """Poll until the budget is spent, the experiment is stopped or its manager is gone, then
        stop the manager. A stop request lowers NNI's trial budget to the trials already started,
        so that those finish and no new one starts."""
        self._experiment = experiment
        print_web_ui(self.config.host, self.config.port, out)
        stopping, gone = False, False
        try:
            while True:
                progress.show(self.counts())
                try:
                    if not stopping and (self.run_dir / STOP_FILE).exists():
                        stopping = True
                        started = sum(s["trialJobNumber"] for s in experiment.get_job_statistics())
                        print("  stopping: the running trials finish, no new one starts", file=out, flush=True)
                        if not started:
                            break
                        experiment.update_max_trial_number(started)
                    status = experiment.get_status()
                    statistics = experiment.get_job_statistics()
                except requests.exceptions.RequestException:
                    if self._manager is not None and self._manager.alive():
                        time.sleep(poll)  # busy, not gone
                        continue
                    gone = True
                    print("  NNI's manager has stopped", file=out, flush=True)
                    break
                running = [s for s in statistics if s.get("trialJobStatus") in ("RUNNING", "WAITING", "UNKNOWN")]
                if status in FINISHED_STATES and not running:
                    break
                time.sleep(poll)
        finally:
            if gone:
                experiment._proc = None  # nothing left to stop; NNI's stop() would log a traceback
            progress.show(self.counts())
            experiment.stop()
            clear_manager_record(self.run_dir)
            self._experiment = None


def _busy_port(config: ExperimentConfig) -> str:
    return (f"--port: {config.port} is in use (another NNI experiment or program listens there); choose another "
            f"with --port (or port: in {config.source})")
