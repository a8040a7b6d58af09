"""The Optuna driver: one study per experiment, several worker processes, seeds first.

Trials run through Optuna's own machinery: ``study.optimize`` with ``MaxTrialsCallback`` (the
budget counts finished trials of the whole study, but interrupted ones that were run again, so a
resumed search only runs what is left; with several workers it can overshoot by at most
``concurrency - 1``), its ``timeout`` for ``max_duration``, and a callback that stops at
``mpqsearch stop``. Constraints use
Optuna 5's ``trial.set_constraint``.

Trials a dead process left RUNNING are found two ways, and queued again (up to
:data:`MAX_RETRIES` times): each trial records the host and process running it, so a resume fails
at once the trials of this machine's processes that have ended; and database storages record a
heartbeat per running trial (:data:`HEARTBEAT_SECONDS`), so a trial silent for
:data:`GRACE_SECONDS` (a worker on another machine that died) is failed by Optuna's
``RetryHeartbeatStaleTrialCallback`` when the next trial starts, in whichever process. A live
worker's trial is never touched. Journal files have no heartbeats: only the first way applies.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import optuna
import psutil
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from ...objectives import feasible
from ..config import ConfigError, ExperimentConfig, parse_config, redact_url
from ..lifetime import die_with_parent
from ..progress import Progress, TrialCounts
from ..runs import STOP_FILE, RunError, load_run
from ..sampler_inputs import sampler_context
from ..samplers import make_sampler
from ..samplers.distinct import REPEAT_ATTR, answer_from_record, recorded_trial
from ..setup import ExperimentSetup, build_setup
from .base import Driver

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
MAX_RETRIES = 2
"""A trial interrupted this many times is not queued again."""
STUDY_ATTR = "mpqsearch"
"""The study's user attribute holding the workload, objective names, driver, the experiment file
(for joining workers), the launch's deadline and a stop request."""
DEFAULT_CACHE_DIR = "~/.cache/mpqsearch/trials"
"""Where a joining worker keeps the trials' shared cache (keyed by model and data)."""


def storage_url(config: ExperimentConfig, run_dir: Path) -> str:
    """The configured storage, or an SQLite file in the experiment's directory."""
    return config.storage or f"sqlite:///{run_dir / 'optuna.db'}"


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """A journal file (``*.log``, ``*.journal``, ``*.jsonl``) or any SQLAlchemy URL (SQLite,
    PostgreSQL for workers on several machines) with heartbeats. SQLite waits up to 60 s for a lock.
    Without ``create``, a missing SQLite or journal file is an error instead of a new empty one.
    Every failure is a one-line :class:`ConfigError` saying what to do, the password masked."""
    shown = redact_url(url)
    if "://" not in url:
        if not url.endswith(JOURNAL_SUFFIXES):
            raise ConfigError(f"storage: {url!r} is neither a database URL nor a journal file "
                              f"({', '.join(JOURNAL_SUFFIXES)})")
        if not create and not Path(url).is_file():
            raise ConfigError(f"storage: {url}: no such journal file")
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    if not create and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"storage: {shown}: no such SQLite file")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.8; they are what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
    except ImportError:
        raise ConfigError(f"storage: {shown}: its database driver is not installed (for PostgreSQL: "
                          "pip install 'mpqsearch[postgres]' and a postgresql+psycopg:// URL)") from None
    except sqlalchemy.exc.ArgumentError as err:
        raise ConfigError(f"storage: {shown}: not a database URL SQLAlchemy can open ({err})") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ConfigError(f"storage: {shown}: cannot open the database: {reason}") from None


WORKER_ATTR = "worker"
"""The trial's user attribute naming the host and process that run it."""


def requeue_dead_trials(study: optuna.Study) -> int:
    """Fail, and queue again, the RUNNING trials whose process on this machine has ended; returns
    how many. Trials of live processes, and of other machines (left to heartbeats), are untouched."""
    host, count = socket.gethostname(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR) or {}
        if owner.get("host") == host and not psutil.pid_exists(owner.get("pid", -1)):
            study.tell(trial.number, state=TrialState.FAIL)
            retry(study, study.get_trials(deepcopy=False)[trial.number])
            count += 1
    return count


def _objective(setup: ExperimentSetup) -> Callable[[optuna.Trial], list[float]]:
    parameters = setup.space.parameters()

    def objective(trial: optuna.Trial) -> list[float]:
        trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
        params = {name: trial.suggest_categorical(name, list(choices)) for name, choices in parameters.items()}
        trial.set_user_attr("strategy", trial.user_attrs.get("strategy", "sampler"))
        recorded = recorded_trial(trial.study, trial.number, params)
        if recorded is not None:  # evaluated before: answered from its record, spends no budget
            return answer_from_record(trial, recorded)
        try:
            outcome = setup.run_trial(params)
        except Exception as err:
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
            raise
        trial.set_user_attr("metrics", outcome.metrics)
        trial.set_user_attr("timings", outcome.result.timings)
        if outcome.result.latency is not None:
            trial.set_user_attr("latency", {**outcome.result.latency.to_dict(),
                                            "isolation": outcome.result.latency_isolation})
        for name, violation in outcome.violations.items():
            trial.set_constraint(name, violation)
        _keep_if_failed_meanwhile(trial, outcome.values)
        return outcome.values

    return objective


def _keep_if_failed_meanwhile(trial: optuna.Trial, values: list[float]) -> None:
    """If another process failed this trial while it ran (its heartbeat looked stale), record the
    result as a completed copy: Optuna cannot tell a failed trial, and a result is never lost."""
    frozen = trial.study.get_trials(deepcopy=False)[trial.number]
    if frozen.state == TrialState.FAIL:
        trial.study.add_trial(optuna.trial.create_trial(
            params=frozen.params, distributions=frozen.distributions, values=values,
            user_attrs={**frozen.user_attrs, "recovered_from": trial.number}, system_attrs=frozen.system_attrs))


class _Stop:
    """Stops the study once it is asked to: the run directory's STOP file (this machine) or the
    study's ``stop`` attribute (workers on any machine), both written by ``mpqsearch stop``."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file = stop_file

    def requested(self, study: optuna.Study) -> bool:
        return bool((self.stop_file is not None and self.stop_file.exists()) or study_attrs(study).get("stop"))

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.requested(study):
            study.stop()


def spent(study: optuna.Study) -> int:
    """Trials that count against the budget: every finished one but those interrupted and queued
    again (they measured nothing; their retry counts instead) and those answered from the record
    of an earlier trial with the same policy (they evaluated nothing)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    retried = {number for t in study.get_trials(deepcopy=False)
               for number in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried and REPEAT_ATTR not in t.user_attrs for t in trials)


class _Budget(MaxTrialsCallback):
    """Optuna's ``MaxTrialsCallback`` over FINISHED trials, not counting interrupted trials that
    were queued again (:func:`spent`)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if spent(study) >= self._n_trials:
            study.stop()


def run_trials(setup: ExperimentSetup, study: optuna.Study, deadline: float | None, stop_file: Path | None,
               on_trial: Callable[[], None] | None = None) -> None:
    """Run trials until the study's budget or the deadline is spent, or a stop is asked for.

    A storage that stops taking writes (a full disk, a lost database) ends the run with
    :class:`RunError`: the finished trials are in the storage, and ``resume`` continues.
    """
    budget, stop = setup.config.budget.max_trials, _Stop(stop_file)
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [_Budget(budget), stop]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial())
    while spent(study) < budget and not stop.requested(study):
        timeout = None if deadline is None else deadline - time.time()
        if timeout is not None and timeout <= 0:
            return
        try:
            study.optimize(_objective(setup), timeout=timeout, callbacks=callbacks, catch=(Exception,))
            return
        except AssertionError as err:  # Optuna's _run_trial when its tell failed: the cause is the context
            cause = err.__context__
            if not (isinstance(cause, ValueError) and "Cannot tell" in str(cause)):
                raise _storage_failure(study, cause or err) from None
            # another process failed this trial meanwhile: the objective saved its result (_objective)
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as err:
            raise _storage_failure(study, err) from None


def _storage_failure(study: optuna.Study, cause: BaseException) -> RunError:
    reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
    return RunError(f"study {study.study_name}: the storage stopped taking results ({reason}); the finished trials "
                    f"are kept: fix the storage (free disk space), then: mpqsearch resume {study.study_name}")


def _worker_entry(run_dir: str, study_name: str, storage: str, worker: int, threads: int,
                  deadline: float | None, parent: int) -> None:
    """One spawned worker process: its own setup (reading the shared cache) on the shared study
    (``storage`` is handed over: a password is not in the run directory's file); it dies with the
    launcher that started it, even one killed with ``kill -9``."""
    die_with_parent(parent)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_run(Path(run_dir), storage)
    setup = build_setup(config, cache_dir=Path(run_dir) / "cache", threads=threads)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    study.sampler = study_sampler(setup, study)
    run_trials(setup, study, deadline, Path(run_dir) / STOP_FILE)


def join(storage: str, study_name: str | None = None, cache_dir: str | os.PathLike | None = None,
         out: TextIO | None = None) -> int:
    """Work on a running experiment's study from another process or machine: read the experiment
    file the launch recorded in the study, run trials until the shared budget, the launch's
    deadline or a stop; returns how many trials this worker ran. The workload must be available
    here as where it was launched (a built-in, an installed module, the same image paths)."""
    backend = open_storage(storage, create=False)
    names = optuna.get_all_study_names(backend)
    if study_name is None and len(names) == 1:
        study_name = names[0]
    if study_name not in names:
        raise ConfigError(f"storage: {redact_url(storage)}: no study {study_name!r} to join "
                          f"(studies: {', '.join(names) or 'none'})")
    recorded = study_attrs(optuna.load_study(study_name=study_name, storage=backend))
    if "experiment" not in recorded:
        raise ConfigError(f"study {study_name!r} was not launched by mpqsearch (it has no experiment file)")
    config = parse_config({**recorded["experiment"], "storage": storage}, f"study {study_name}")
    setup = build_setup(config, cache_dir=Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
    setup.warm_up()
    study = optuna.load_study(study_name=study_name, storage=backend)
    study.sampler = study_sampler(setup, study)
    before = _own_trials(study)
    print(f"worker {socket.gethostname()}:{os.getpid()} on study {study_name} ({config.workload})",
          file=out or sys.stdout, flush=True)
    run_trials(setup, study, recorded.get("deadline"), None)
    return _own_trials(study) - before


def study_sampler(setup: ExperimentSetup, study: optuna.Study) -> optuna.samplers.BaseSampler:
    """The experiment's sampler for ``study`` (the number of seeds is the one the launch recorded)."""
    seeds = int(study_attrs(study).get("seeds", 0))
    return make_sampler(setup.config.sampler, source=setup.config.source, context=sampler_context(setup, seeds))


def _own_trials(study: optuna.Study) -> int:
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    return sum(t.user_attrs.get(WORKER_ATTR) == me for t in study.get_trials(deepcopy=False, states=FINISHED))


class OptunaDriver(Driver):
    """Creates (or reopens) the study and runs ``budget.concurrency`` workers on it."""

    name = "optuna"

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        super().__init__(config, experiment_id, run_dir)
        self.url = storage_url(config, run_dir)
        self._storage: optuna.storages.BaseStorage | None = None

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """The sampler builds with its arguments, and a configured storage opens."""
        make_sampler(config.sampler, source=config.source)
        if config.storage:
            open_storage(config.storage)

    @property
    def multi_objective(self) -> bool:
        return True

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        if self._storage is None:
            self._storage = open_storage(self.url)
        return self._storage

    def describe(self, out: TextIO) -> None:
        shown = redact_url(self.url)
        print(f"  storage: {shown} (study {self.experiment_id}); watch it with: optuna-dashboard {shown}", file=out)

    def _study(self, setup: ExperimentSetup) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(
            study_name=self.experiment_id, storage=self.storage, load_if_exists=True,
            directions=setup.objectives.directions, sampler=optuna.samplers.RandomSampler())

    def launch(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        seeds = setup.seeds()
        study = self._study(setup)
        experiment = self.config.to_dict() | {"storage": None}  # workers bring the URL (and its password)
        study.set_user_attr(STUDY_ATTR, {"workload": self.config.workload_spec, "objectives": setup.objectives.names,
                                         "driver": self.name, "experiment": experiment,
                                         "deadline": self._deadline(), "seeds": len(seeds)})
        study.sampler = study_sampler(setup, study)
        for policy in seeds:
            study.enqueue_trial(setup.space.params_from_policy(policy),
                                user_attrs={"strategy": policy.provenance["strategy"]}, skip_if_exists=True)
        self._run(setup, study, progress)

    def resume(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        study = self._study(setup)
        study.set_user_attr(STUDY_ATTR, {**study_attrs(study), "stop": False, "deadline": self._deadline()})
        study.sampler = study_sampler(setup, study)
        requeue_dead_trials(study)
        self._run(setup, study, progress)

    def _deadline(self) -> float | None:
        return time.time() + self.config.budget.max_seconds if self.config.budget.max_seconds else None

    def _run(self, setup: ExperimentSetup, study: optuna.Study, progress: Progress) -> None:
        """Run ``budget.concurrency`` workers until the budget is spent, showing progress as the
        study grows. The launcher is the first worker: it starts trials at once, with the setup
        it has warmed, while the other workers start (import torch, read the cache) beside it."""
        setup.record(self.run_dir)
        deadline = self._deadline()
        workers = self.config.budget.concurrency
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_entry, daemon=False,
                                     args=(str(self.run_dir), self.experiment_id, self.url, i, threads, deadline,
                                           os.getpid()))
                     for i in range(1, workers)]
        for process in processes:
            process.start()
        try:
            setup.evaluator.threads = threads
            run_trials(setup, study, deadline, self.run_dir / STOP_FILE, lambda: progress.show(self.counts()))
            while any(p.is_alive() for p in processes):  # the others finish their last trial
                progress.show(self.counts())
                time.sleep(0.5)
        finally:
            for process in processes:
                process.join()
        progress.show(self.counts())

    def stop(self) -> None:
        """The STOP file stops this machine's workers; the study's ``stop`` attribute, where the
        storage opens (its password is not saved), stops joined workers elsewhere too."""
        (self.run_dir / STOP_FILE).write_text("stop requested\n")
        if ":***@" in self.url:
            return
        study = optuna.load_study(study_name=self.experiment_id, storage=self.storage)
        study.set_user_attr(STUDY_ATTR, {**study_attrs(study), "stop": True})

    def counts(self) -> TrialCounts:
        trials = optuna.load_study(study_name=self.experiment_id, storage=self.storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and REPEAT_ATTR not in t.user_attrs]
        return TrialCounts(len(complete), sum(t.state == TrialState.FAIL for t in trials),
                           sum(t.state == TrialState.RUNNING for t in trials),
                           [t.values for t in complete if feasible(t.constraints)])

    def view(self, port: int | None) -> None:
        raise ConfigError(f"experiment {self.experiment_id} ran on Optuna: open it with optuna-dashboard "
                          f"{redact_url(self.url)}")


def study_attrs(study: optuna.Study) -> dict[str, Any]:
    """What the driver recorded on the study (workload, objective names), empty for other studies."""
    return dict(study.user_attrs.get(STUDY_ATTR, {}))
