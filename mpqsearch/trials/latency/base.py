"""What every latency backend shares: the request, the result, the registry and the timer.

A backend answers one question for one trial: how long does the model under this policy take?
Backends register themselves by name; :func:`get_latency_backend` builds one from its name and
options (from the experiment file or the command line), and options it does not know are an
error that names them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from torch import nn

from ...policy import Policy
from ...search_spaces import SearchSpace


@dataclass(frozen=True)
class LatencyRequest:
    """Everything a backend may need: end-to-end backends time ``qmodel`` (the fake-quant model
    of ``policy``) on ``example_input``; the lookup table reads ``model`` (float), ``space`` and
    ``policy`` and never touches ``qmodel``."""

    model: nn.Module
    qmodel: nn.Module | None
    example_input: Any
    space: SearchSpace | None = None
    policy: Policy | None = None


@dataclass(frozen=True)
class LatencyResult:
    """A measured latency: the median and the interquartile range of ``runs`` timed runs, in
    milliseconds; ``method`` is ``end-to-end`` or ``lookup-table``."""

    median_ms: float
    iqr_ms: float
    runs: int
    backend: str
    method: str
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    """Median and interquartile range of repeated runs, in milliseconds."""

    median_ms: float
    iqr_ms: float
    runs: int


def time_calls(call: Callable[[], Any], *, warmup: int, repeats: int) -> Timing:
    """Run ``call`` ``warmup`` times untimed, then ``repeats`` times timed, one by one."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q3 - q1), repeats)


class LatencyBackend(ABC):
    """Measures one request; ``None`` means "no latency" (the ``none`` backend)."""

    name: ClassVar[str]

    @abstractmethod
    def measure(self, request: LatencyRequest) -> LatencyResult | None:
        """The latency of ``request``'s policy."""

    def prepare(self, model: nn.Module, example_input: Any, space: SearchSpace) -> None:  # noqa: B027 - optional
        """Measure ahead, before any trial runs, what this backend would otherwise measure while
        other trials compute (a lookup table's entries). Nothing by default."""

    def isolation(self, locked: bool) -> str:
        """How a trial's latency is kept clean of other trials' work: ``sole`` (no other trial
        runs in the experiment), ``exclusive`` (timed under a lock no computing trial holds, when
        ``locked``), or ``table`` for backends whose numbers were measured ahead."""
        return "exclusive" if locked else "sole"


class TimedBackend(LatencyBackend):
    """A backend that times runs: ``threads`` (intra-op threads during the measurement),
    ``repeats`` timed runs after ``warmup`` untimed ones."""

    def __init__(self, *, threads: int = 1, repeats: int = 50, warmup: int = 10) -> None:
        for option, value, least in (("threads", threads, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"latency option {option} must be an integer >= {least}, got {value!r}")
        self.threads, self.repeats, self.warmup = threads, repeats, warmup

    def result(self, timing: Timing, method: str) -> LatencyResult:
        return LatencyResult(timing.median_ms, timing.iqr_ms, timing.runs, self.name, method, self.threads)


_REGISTRY: dict[str, type[LatencyBackend]] = {}
Backend = TypeVar("Backend", bound=type[LatencyBackend])


def register_latency_backend(cls: Backend) -> Backend:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def latency_backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_options(name: str, threads: int, target: str | None = None) -> dict[str, Any]:
    """The options to build backend ``name`` with for a trial: none for ``none``; ``threads``;
    ``target`` (the export's, see :func:`mpqsearch.quant.export.weight_container`) only when one
    is asked for, so that a backend without exports refuses it. Without it, backends time the
    target the policy was quantized for."""
    if name == "none":
        return {}
    return {"threads": threads} if target is None else {"threads": threads, "target": target}


def get_latency_backend(name: str, **options: Any) -> LatencyBackend:
    """The backend called ``name``, built with ``options`` (for example ``threads=1``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown latency backend {name!r}; choose one of {', '.join(latency_backend_names())}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:  # an option the backend does not take
        raise ValueError(f"latency backend {name!r} does not take the options {sorted(options)}: {err}") from None
