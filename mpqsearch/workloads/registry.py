"""Workloads by name: the built-in ones, those registered by user code, and ``module:function``.

Example::

    workload = get_workload("sr-espcn-x2")           # built-in
    workload = get_workload("my_package.data:digits")  # any function returning a Workload
"""

from __future__ import annotations

from collections.abc import Callable

from ..specs import load_callable
from . import builtin, example
from .base import Workload

WorkloadFactory = Callable[[], Workload]

_REGISTRY: dict[str, WorkloadFactory] = {
    "example": example.example_workload,
    "sr-espcn-x2": builtin.espcn_x2,
    "sr-srresnet-x2": builtin.srresnet_x2,
    "sr-rrdb-x2": builtin.rrdb_x2,
    "sr-espcn-clip-x2": builtin.espcn_clip_x2,
    "sr-espcn-clipfree-x2": builtin.espcn_clipfree_x2,
    "cls-digits": builtin.digits,
}


def register_workload(name: str) -> Callable[[WorkloadFactory], WorkloadFactory]:
    """Decorator registering a workload factory under ``name`` (for code that imports mpqsearch;
    from the command line and experiment files, ``module:function`` needs no registration)."""
    def decorate(factory: WorkloadFactory) -> WorkloadFactory:
        _REGISTRY[name] = factory
        return factory
    return decorate


def workload_names() -> list[str]:
    return sorted(_REGISTRY)


def get_workload(spec: str) -> Workload:
    """A registered workload by name, or a user workload by ``module:function``; ``ValueError``
    naming the spec (and the known names) otherwise."""
    if ":" in spec:
        workload = load_callable(spec, "workload")()
        if not isinstance(workload, Workload):
            raise ValueError(f"workload {spec!r}: returned {type(workload).__name__}, not a mpqsearch Workload")
        return workload
    if spec not in _REGISTRY:
        raise ValueError(f"unknown workload {spec!r}; built-in workloads: {', '.join(workload_names())}")
    return _REGISTRY[spec]()
