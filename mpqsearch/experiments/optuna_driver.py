"""The Optuna driver: one study per experiment, several worker processes, seeds first.

Constraints use Optuna 5's core API (``trial.set_constraint``; the samplers' ``constraints_func``
is deprecated there). The trial budget counts finished and running trials of the whole study, so
a resumed search only runs what is left; with several workers it can overshoot by at most
``concurrency - 1`` trials, Optuna's own ``MaxTrialsCallback`` semantics.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.trial import TrialState

from .config import Algorithm, ConfigError, ExperimentConfig, load_config
from .launcher import STOP_FILE, Progress
from ..objectives import Objective, ObjectiveSet, feasible
from .setup import ExperimentSetup, build_setup

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "NSGAII": optuna.samplers.NSGAIISampler,
    "NSGAIII": optuna.samplers.NSGAIIISampler,
    "TPE": optuna.samplers.TPESampler,
    "Random": optuna.samplers.RandomSampler,
    "GP": optuna.samplers.GPSampler,
}
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def make_sampler(algorithm: Algorithm, source: str = "<config>", worker: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler by name; a configured ``seed`` is offset per worker so workers do not repeat each other."""
    if algorithm.name not in SAMPLERS:
        raise ConfigError(f"{source}: sampler.name: unknown sampler {algorithm.name!r} "
                          f"(available: {', '.join(SAMPLERS)})")
    args = dict(algorithm.args)
    if args.get("seed") is not None:
        args["seed"] = int(args["seed"]) + worker
    try:
        return SAMPLERS[algorithm.name](**args)
    except TypeError as err:
        raise ConfigError(f"{source}: sampler.args: {err}") from None


def storage_url(config: ExperimentConfig, run_dir: Path) -> str:
    """The configured storage, or an SQLite file in the experiment's directory."""
    return config.storage or f"sqlite:///{run_dir / 'optuna.db'}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (``*.log``, ``*.journal``, ``*.jsonl``) or any SQLAlchemy URL (SQLite,
    PostgreSQL for workers on several machines). SQLite waits up to 60 s for a lock."""
    if "://" not in url:
        if not url.endswith(JOURNAL_SUFFIXES):
            raise ConfigError(f"storage: {url!r} is neither a database URL nor a journal file "
                              f"({', '.join(JOURNAL_SUFFIXES)})")
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _objective(setup: ExperimentSetup) -> Callable[[optuna.Trial], list[float]]:
    parameters = setup.space.parameters()

    def objective(trial: optuna.Trial) -> list[float]:
        params = {name: trial.suggest_categorical(name, list(choices)) for name, choices in parameters.items()}
        trial.set_user_attr("strategy", trial.user_attrs.get("strategy", "sampler"))
        try:
            outcome = setup.run_trial(params)
        except Exception as err:  # noqa: BLE001 - recorded as a failed trial, the search goes on
            trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}")
            raise
        trial.set_user_attr("metrics", outcome.metrics)
        trial.set_user_attr("timings", outcome.result.timings)
        if outcome.result.latency is not None:
            trial.set_user_attr("latency", {**outcome.result.latency.to_dict(),
                                            "isolation": outcome.result.latency_isolation})
        for name, violation in outcome.violations.items():
            trial.set_constraint(name, violation)
        return outcome.values

    return objective


def run_trials(setup: ExperimentSetup, study: optuna.Study, deadline: float | None,
               on_trial: Callable[[optuna.Study], None] | None = None, stop_file: Path | None = None) -> None:
    """Run trials until the study's budget or the deadline is spent, or ``stop_file`` appears."""
    objective = _objective(setup)
    while _count(study, FINISHED + (TrialState.RUNNING,)) < setup.config.budget.max_trials:
        if deadline is not None and time.time() >= deadline:
            break
        if stop_file is not None and stop_file.exists():
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if on_trial is not None:
            on_trial(study)


def _worker_entry(config_path: str, study_name: str, run_dir: str, worker: int, threads: int,
                  deadline: float | None) -> None:
    """One spawned worker process: its own setup (reading the shared cache) on the shared study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(config_path)
    setup = build_setup(config, cache_dir=Path(run_dir) / "cache", threads=threads)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url(config, Path(run_dir))),
                              sampler=make_sampler(config.sampler, config.source, worker))
    run_trials(setup, study, deadline, stop_file=Path(run_dir) / STOP_FILE)


def optuna_progress(config: ExperimentConfig, out: TextIO) -> Callable[[optuna.Study], None]:
    """A progress printer for the study (:class:`~.launcher.Progress`); its objectives are the
    study's (names as recorded at creation, directions as the study has them)."""
    printer: Progress | None = None

    def show(study: optuna.Study) -> None:
        nonlocal printer
        trials = study.get_trials(deepcopy=False)
        if printer is None:
            names = study.user_attrs.get("mpqsearch", {}).get("objectives") or [f"objective{i}" for i in
                                                                                range(len(study.directions))]
            objectives = ObjectiveSet([Objective(n, d.name.lower()) for n, d in zip(names, study.directions)], [])
            printer = Progress(objectives, config.budget.max_trials, multi_objective=True, out=out)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        printer.show(len(complete), sum(t.state == TrialState.FAIL for t in trials),
                     sum(t.state == TrialState.RUNNING for t in trials),
                     [t.values for t in complete if feasible(t.constraints)])

    return show


class OptunaDriver:
    """Creates (or reopens) the study and runs ``budget.concurrency`` workers on it."""

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        self.config = config
        self.experiment_id = experiment_id
        self.run_dir = run_dir
        self.url = storage_url(config, run_dir)
        self.storage = open_storage(self.url)

    def open_study(self, setup: ExperimentSetup) -> optuna.Study:
        return optuna.create_study(
            study_name=self.experiment_id, storage=self.storage, load_if_exists=True,
            directions=setup.objectives.directions, sampler=make_sampler(self.config.sampler, self.config.source))

    def prepare(self) -> tuple[ExperimentSetup, optuna.Study]:
        """Build the setup, warm the shared cache, create the study and queue the seeds once."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        setup = build_setup(self.config, cache_dir=self.run_dir / "cache")
        setup.warm_up()
        study = self.open_study(setup)
        if not study.user_attrs.get("mpqsearch"):
            study.set_user_attr("mpqsearch", {"workload": self.config.workload, "objectives": setup.objectives.names,
                                              "driver": "optuna"})
            for policy in setup.seeds():
                study.enqueue_trial(setup.space.params_from_policy(policy),
                                    user_attrs={"strategy": policy.provenance["strategy"]}, skip_if_exists=True)
        self.requeue_interrupted(study)
        return setup, study

    def requeue_interrupted(self, study: optuna.Study) -> int:
        """Trials left RUNNING by an interrupted launch are marked failed and queued again.

        Only one launcher may work on a study at a time (workers on other machines sharing a
        PostgreSQL storage would have their running trials requeued too).
        """
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in stale:
            self.storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted; queued again")
            self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={k: v for k, v in trial.user_attrs.items()
                                                          if k == "strategy"})
        return len(stale)

    def run(self, config_path: Path, on_progress: Callable[[optuna.Study], None]) -> optuna.Study:
        """Run the workers until the budget is spent; ``on_progress`` sees the study as it grows."""
        setup, study = self.prepare()
        deadline = time.time() + self.config.budget.max_seconds if self.config.budget.max_seconds else None
        workers = self.config.budget.concurrency
        threads = max(1, (os.cpu_count() or 1) // workers)
        if workers == 1:
            setup.evaluator.threads = threads
            run_trials(setup, study, deadline, on_progress, self.run_dir / STOP_FILE)
            return study
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_entry, daemon=False,
                                     args=(str(config_path), self.experiment_id, str(self.run_dir), i, threads, deadline))
                     for i in range(workers)]
        for process in processes:
            process.start()
        try:
            while any(p.is_alive() for p in processes):
                on_progress(study)
                time.sleep(1.0)
        finally:
            for process in processes:
                process.join()
        on_progress(study)
        return study
