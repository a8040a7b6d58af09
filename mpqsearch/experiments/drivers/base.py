"""The driver interface: what runs an experiment's trials, whichever optimization library.

A driver turns an :class:`~mpqsearch.experiments.setup.ExperimentSetup` (workload, search space,
seeds, objectives) into trials run by its library and recorded in its storage, where
:mod:`mpqsearch.analysis` reads them. Like Optuna's ``BaseSampler``, a subclass implements the
abstract methods and says which experiment-file sections it reads; the launcher never branches on
the driver's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TextIO

from ..config import ConfigError, ExperimentConfig
from ..progress import TrialCounts

if TYPE_CHECKING:
    from ..progress import Progress
    from ..setup import ExperimentSetup


class Driver(ABC):
    """Launches, resumes, stops and shows one experiment, whose files live in ``run_dir``.

    Args:
        config: The experiment file, flags applied.
        experiment_id: The experiment's ID (also the study's or NNI experiment's).
        run_dir: The experiment's run directory (:mod:`mpqsearch.experiments.runs`).
    """

    name: ClassVar[str]

    def __init__(self, config: ExperimentConfig, experiment_id: str, run_dir: Path) -> None:
        self.config = config
        self.experiment_id = experiment_id
        self.run_dir = run_dir

    @classmethod  # noqa: B027 - an optional hook, nothing to check by default
    def check(cls, config: ExperimentConfig) -> None:
        """Refuse a configuration this driver cannot run, before anything is created on disk.

        Raises:
            ConfigError: one line naming the file and the key.
        """

    @property
    @abstractmethod
    def multi_objective(self) -> bool:
        """Whether the search optimizes every objective (a Pareto search), or the first only."""

    @abstractmethod
    def launch(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        """Start the experiment and run trials until the budget is spent, the deadline passes or
        it is stopped, showing ``progress``; seeds run first. Returns when no trial runs any more."""

    @abstractmethod
    def resume(self, setup: ExperimentSetup, progress: Progress, out: TextIO) -> None:
        """Continue an interrupted or stopped experiment: finished trials are kept, trials that
        were running when it was interrupted run again, and trials run until the budget is spent."""

    @abstractmethod
    def stop(self) -> None:
        """Ask the experiment, running in another process, to stop: trials already running finish
        and are recorded, no new one starts."""

    @abstractmethod
    def counts(self) -> TrialCounts:
        """Where the search stands, read from the driver's storage (for the progress line)."""

    def describe(self, out: TextIO) -> None:  # noqa: B027 - an optional hook, nothing to print by default
        """Print where the experiment can be watched while it runs (a storage URL, a web UI)."""

    def view(self, port: int | None) -> None:
        """Serve a read-only view of a finished experiment until interrupted (Ctrl-C).

        Raises:
            ConfigError: when the driver has no view of its own (the message says what to open).
        """
        raise ConfigError(f"experiment {self.experiment_id} ran on {self.name}, which has no view of its own")
