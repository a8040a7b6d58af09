"""The NNI driver: an NNI experiment on the local training service, watched in the web UI.

Tuners: NNI's built-in ones that work here (TPE, Evolution, Anneal, Random, GridSearch) run on
the scalarized objective behind :class:`GuardedTuner` (seeds first, TPE's race survived);
``MultiObjective`` runs Optuna's NSGA-II (or TPE) as a real Pareto search. Tuners that cannot
work with NNI 3.0 on this stack are refused before anything is created, with the reason. The
manager starts bound to the configured host (:mod:`.nni_manager`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml
from nni.experiment import CustomAlgorithmConfig, Experiment

from ...objectives import feasible
from ..config import ConfigError, ExperimentConfig
from ..progress import Progress, TrialCounts
from ..runs import EXPERIMENT_FILE, launch_directory
from ..samplers import TUNER_SAMPLERS
from ..setup import ExperimentSetup
from ..trial_records import read_trial_records
from .base import Driver
from .nni_manager import manager_start, preload_option, print_web_ui
from .nni_trial import CONCURRENCY_VARIABLE
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
SEEDS_FILE = "seeds.json"


def tuner_config(setup: ExperimentSetup, seeds: list[dict[str, Any]]) -> CustomAlgorithmConfig:
    config = setup.config
    if config.tuner.name == MULTI_OBJECTIVE:
        args = dict(config.tuner.args)
        class_args = {
            "objectives": [[o.metric, o.direction] for o in setup.objectives.objectives],
            "constraints": [[c.metric, c.max, c.min] for c in setup.objectives.constraints],
            "sampler": args.pop("sampler", "NSGAII"), "sampler_args": args, "seeds": seeds,
        }
        class_name = "mpqsearch_tuners.MultiObjectiveTuner"
    else:
        class_args = {"tuner": config.tuner.name, "tuner_args": dict(config.tuner.args), "seeds": seeds,
                      "optimize_mode": setup.objectives.directions[0]}
        class_name = "mpqsearch_tuners.GuardedTuner"
    return CustomAlgorithmConfig(name=None, class_name=class_name, code_directory=str(TUNER_DIR),
                                 class_args=class_args)


class NniDriver(Driver):
    """Starts, resumes, views and stops NNI experiments whose files live in ``run_dir``."""

    name = "nni"

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        super().__init__(config, experiment_id, run_dir)
        self._experiment: Experiment | None = None

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """Refuse, with the reason, a tuner that cannot work here."""
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

    def build(self, setup: ExperimentSetup) -> Experiment:
        """The NNI experiment: search space, trial command, budget, tuner with the seeds first."""
        seeds = [{"params": setup.space.params_from_policy(p), "strategy": p.provenance["strategy"]}
                 for p in setup.seeds()]
        (self.run_dir / SEEDS_FILE).write_text(json.dumps(seeds, indent=1))
        experiment = Experiment("local", id=self.experiment_id)
        c = experiment.config
        c.experiment_name = self.config.name or self.experiment_id
        c.search_space = setup.space.to_nni()
        c.trial_command = shlex.join([sys.executable, "-m", "mpqsearch.experiments.drivers.nni_trial",
                                      str(self.run_dir / EXPERIMENT_FILE), str(self.run_dir)])
        c.trial_code_directory = str(self.run_dir)
        c.trial_concurrency = self.config.budget.concurrency
        c.max_trial_number = self.config.budget.max_trials
        if self.config.budget.max_seconds:
            c.max_experiment_duration = f"{int(self.config.budget.max_seconds)}s"
        c.experiment_working_directory = str(self.run_dir / "nni")
        c.tuner = tuner_config(setup, [s["params"] for s in seeds])
        c.training_service.use_active_gpu = False
        self.write_nnictl_config(experiment)
        return experiment

    def write_nnictl_config(self, experiment: Experiment) -> Path:
        """The same experiment as ``config.yml`` for ``nnictl create --config``."""
        data = experiment.config.json()
        path = self.run_dir / "config.yml"
        header = ("# nnictl create --config config.yml --port PORT\n"
                  f"# to keep the web UI on {self.config.host}, first: export NODE_OPTIONS="
                  f"{shlex.quote(preload_option(self.run_dir))}\n")
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        return path

    def launch(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        setup.warm_up()
        setup.record(self.run_dir)
        experiment = self.build(setup)
        with manager_start(self.run_dir, self.config.host, self._trial_environment()):
            experiment.start(self.config.port)
        self._wait(experiment, progress, out)

    def resume(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        setup.record(self.run_dir)
        experiment = Experiment(None, id=self.experiment_id)
        with manager_start(self.run_dir, self.config.host, self._trial_environment()):
            experiment.resume(self.config.port, wait_completion=False)
        self._wait(experiment, progress, out)

    def _trial_environment(self) -> dict[str, str]:
        """What the manager passes on to trials: how many run at once (their share of the cores),
        and the launch directory first on their import path (for ``module:function`` references)."""
        path = os.pathsep.join(filter(None, [launch_directory(self.run_dir), os.environ.get("PYTHONPATH")]))
        return {CONCURRENCY_VARIABLE: str(self.config.budget.concurrency), "PYTHONPATH": path}

    def view(self, port: int | None) -> None:
        """Serve the web UI of a finished experiment until interrupted (Ctrl-C)."""
        with manager_start(self.run_dir, self.config.host):
            Experiment(None, id=self.experiment_id).view(port or self.config.port)

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", self.experiment_id], check=False)

    def counts(self) -> TrialCounts:
        done = [r for r in read_trial_records(self.run_dir).values() if r.get("state") == "SUCCEEDED"]
        try:
            stats = {s["trialJobStatus"]: s["trialJobNumber"] for s in self._experiment.get_job_statistics()}
        except Exception:
            stats = {}
        return TrialCounts(stats.get("SUCCEEDED", len(done)), stats.get("FAILED", 0) + stats.get("SYS_CANCELED", 0),
                           stats.get("RUNNING", 0), [r["values"] for r in done if feasible(r.get("violations"))])

    def _wait(self, experiment: Experiment, progress: Progress, out: TextIO, poll: float = 2.0) -> None:
        """Poll until the budget is spent (or the experiment stopped), then stop the manager."""
        self._experiment = experiment
        print_web_ui(self.config.host, self.config.port, out)
        try:
            while True:
                progress.show(self.counts())
                status = experiment.get_status()
                running = [s for s in experiment.get_job_statistics()
                           if s.get("trialJobStatus") in ("RUNNING", "WAITING", "UNKNOWN")]
                if status in FINISHED_STATES and not running:
                    break
                time.sleep(poll)
        finally:
            progress.show(self.counts())
            experiment.stop()
