"""The NNI driver: an NNI experiment on the local training service, watched in the web UI.

Tuners: NNI's built-in ones that work here (TPE, Evolution, Anneal, Random, GridSearch) run on
the scalarized objective behind :class:`GuardedTuner` (seeds first, TPE's race survived);
``MultiObjective`` runs Optuna's NSGA-II (or TPE) as a real Pareto search. Tuners that cannot
work with NNI 3.0 on this stack are refused when the file is read, with the reason.

The web UI listens on ``config.host`` (127.0.0.1 by default): NNI's manager has no host option
and no authentication (issue #3594), so a small Node preload script, passed through
``NODE_OPTIONS``, makes every server it opens bind to that address. NNI's launcher gives the
manager 3 seconds to answer, too few for a first start after installing (Node reads its modules
from a cold disk: a test run's first experiment failed so) or on a busy machine; here it gets
:data:`MANAGER_START_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

import psutil
import yaml
from nni.experiment import CustomAlgorithmConfig, Experiment
from nni.experiment import launcher as nni_launcher

from .config import ConfigError, ExperimentConfig
from .launcher import Progress
from ..objectives import ObjectiveSet, feasible
from .setup import ExperimentSetup
from .trial_records import read_trial_records

TUNER_DIR = Path(__file__).parent / "nni_tuners"
MANAGER_START_SECONDS = 30
BUILTIN = ("TPE", "Evolution", "Anneal", "Random", "GridSearch")
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

_PRELOAD = """// mpqsearch: make every server NNI's manager opens listen on one address only.
const net = require('net');
const host = process.env.MPQSEARCH_LISTEN_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\\d+$/.test(args[0]))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, host);
  } else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) {
    args[0] = Object.assign({}, args[0], { host: host });
  }
  return listen.apply(this, args);
};
"""


def check_tuner(config: ExperimentConfig) -> None:
    """Refuse, with the reason, a tuner that cannot work here."""
    name = config.tuner.name
    if name in REFUSED:
        raise ConfigError(f"{config.source}: tuner.name: {name} cannot be used: {REFUSED[name]}")
    if name not in BUILTIN and name != MULTI_OBJECTIVE:
        raise ConfigError(f"{config.source}: tuner.name: unknown tuner {name!r} "
                          f"(available: {', '.join(BUILTIN + (MULTI_OBJECTIVE,))})")
    if name == MULTI_OBJECTIVE and config.tuner.args.get("sampler", "NSGAII") not in ("NSGAII", "NSGAIII", "TPE", "Random"):
        raise ConfigError(f"{config.source}: tuner.args.sampler: must be NSGAII, NSGAIII, TPE or Random")


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


class _QuietStart(logging.Filter):
    """Drops NNI's start-up noise: its "Timeout, retry..." warnings while the manager starts
    (expected, see :data:`MANAGER_START_SECONDS`) and its list of web UI URLs, which names every
    interface whether or not the manager listens there (:func:`web_ui_urls` prints those that
    answer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Timeout, retry", "Web portal URLs"))


@contextmanager
def manager_start(run_dir: Path, host: str) -> Iterator[None]:
    """Start NNI's manager with the preload script that binds its servers to ``host``, waiting
    up to :data:`MANAGER_START_SECONDS` for it to answer (module docstring), without NNI's
    start-up noise (:class:`_QuietStart`)."""
    preload = run_dir / "listen-host.js"
    preload.write_text(_PRELOAD)
    saved = {k: os.environ.get(k) for k in ("NODE_OPTIONS", "MPQSEARCH_LISTEN_HOST")}
    os.environ["NODE_OPTIONS"] = " ".join(filter(None, [saved["NODE_OPTIONS"], f"--require {preload}"]))
    os.environ["MPQSEARCH_LISTEN_HOST"] = host
    check = nni_launcher._check_rest_server
    nni_launcher._check_rest_server = lambda port, retry=3, url_prefix=None: check(
        port, retry=max(retry, MANAGER_START_SECONDS), url_prefix=url_prefix)
    quiet = _QuietStart()
    nni_logger = logging.getLogger("nni.experiment")
    nni_logger.addFilter(quiet)
    try:
        yield
    finally:
        nni_logger.removeFilter(quiet)
        nni_launcher._check_rest_server = check
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def web_ui_urls(host: str, port: int) -> list[str]:
    """The web UI's URLs that answer: ``host``'s, or for a wildcard host (``0.0.0.0``, ``::``)
    every IPv4 address of this machine's interfaces on which the manager answers."""
    if host in ("0.0.0.0", "::", ""):
        candidates = [address.address for addresses in psutil.net_if_addrs().values() for address in addresses
                      if address.family == socket.AF_INET]
    else:
        candidates = [host]
    urls = []
    for address in candidates:
        url = f"http://{address}:{port}"
        try:
            with urllib.request.urlopen(f"{url}/api/v1/nni/check-status", timeout=5):
                urls.append(url)
        except OSError:
            continue
    return urls


def _print_web_ui(host: str, port: int, out: TextIO | None) -> None:
    urls = web_ui_urls(host, port)
    print(f"  web UI: {' '.join(urls)}" if urls else f"  web UI: nothing answers on {host}:{port}", file=out or sys.stdout, flush=True)


class NniDriver:
    """Starts, resumes, views and stops NNI experiments whose files live in ``run_dir``."""

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        check_tuner(config)
        self.config = config
        self.experiment_id = experiment_id
        self.run_dir = run_dir

    def build(self, setup: ExperimentSetup, config_path: Path) -> Experiment:
        seeds = [{"params": setup.space.params_from_policy(p), "strategy": p.provenance["strategy"]}
                 for p in setup.seeds()]
        (self.run_dir / "seeds.json").write_text(json.dumps(seeds, indent=1))
        experiment = Experiment("local", id=self.experiment_id)
        c = experiment.config
        c.experiment_name = self.config.name or self.experiment_id
        c.search_space = setup.space.to_nni()
        c.trial_command = f"{sys.executable} -m mpqsearch.experiments.nni_trial {config_path} {self.run_dir}"
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
                  f"# to keep the web UI on {self.config.host}, first: export NODE_OPTIONS='--require "
                  f"{self.run_dir / 'listen-host.js'}'\n")
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        return path

    def launch(self, setup: ExperimentSetup, config_path: Path, port: int,
               on_progress: Callable[[Experiment], None], out: TextIO | None = None) -> Experiment:
        setup.warm_up()
        experiment = self.build(setup, config_path)
        os.environ["MPQSEARCH_CONCURRENCY"] = str(self.config.budget.concurrency)
        with manager_start(self.run_dir, self.config.host):
            experiment.start(port)
        _print_web_ui(self.config.host, port, out)
        return self.wait(experiment, on_progress)

    def resume(self, port: int, on_progress: Callable[[Experiment], None], out: TextIO | None = None) -> Experiment:
        experiment = Experiment(None, id=self.experiment_id)
        os.environ["MPQSEARCH_CONCURRENCY"] = str(self.config.budget.concurrency)
        with manager_start(self.run_dir, self.config.host):
            experiment.resume(port, wait_completion=False)
        _print_web_ui(self.config.host, port, out)
        return self.wait(experiment, on_progress)

    def view(self, port: int) -> None:
        """Serve the web UI of a finished experiment until interrupted (Ctrl-C)."""
        with manager_start(self.run_dir, self.config.host):
            Experiment(None, id=self.experiment_id).view(port)

    @staticmethod
    def wait(experiment: Experiment, on_progress: Callable[[Experiment], None], poll: float = 2.0) -> Experiment:
        """Poll until the budget is spent (or the experiment stopped), then stop the manager."""
        try:
            while True:
                on_progress(experiment)
                status = experiment.get_status()
                running = [s for s in experiment.get_job_statistics()
                           if s.get("trialJobStatus") in ("RUNNING", "WAITING", "UNKNOWN")]
                if status in FINISHED_STATES and not running:
                    break
                time.sleep(poll)
        finally:
            on_progress(experiment)
            experiment.stop()
        return experiment


def nni_progress(config: ExperimentConfig, objectives: ObjectiveSet, run_dir: Path,
                 out: TextIO) -> Callable[[Experiment], None]:
    """A progress printer (:class:`~.launcher.Progress`) reading NNI's job statistics and the
    trials' own records."""
    printer = Progress(objectives, config.budget.max_trials, config.tuner.name == MULTI_OBJECTIVE, out)

    def show(experiment: Experiment) -> None:
        done = [r for r in read_trial_records(run_dir).values() if r.get("state") == "SUCCEEDED"]
        try:
            stats = {s["trialJobStatus"]: s["trialJobNumber"] for s in experiment.get_job_statistics()}
        except Exception:  # noqa: BLE001 - the manager may be starting or gone; show what the records say
            stats = {}
        printer.show(stats.get("SUCCEEDED", len(done)), stats.get("FAILED", 0) + stats.get("SYS_CANCELED", 0),
                     stats.get("RUNNING", 0), [r["values"] for r in done if feasible(r.get("violations"))])

    return show
