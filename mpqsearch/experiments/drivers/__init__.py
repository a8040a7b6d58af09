"""Drivers: what runs an experiment's trials (:class:`~.base.Driver`), one per library.

``nni`` (:mod:`.nni`: NNI experiments, the web UI, NNI's tuners and a multi-objective tuner
wrapping Optuna's samplers) and ``optuna`` (:mod:`.optuna`: an Optuna study, several workers, any
storage). The registry names each driver's module and class; a driver's module is imported when
the driver is used (importing NNI's experiment package alone takes seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Driver

_REGISTRY = {"nni": ("nni", "NniDriver"), "optuna": ("optuna", "OptunaDriver")}
DRIVERS: tuple[str, ...] = tuple(_REGISTRY)


def get_driver(name: str) -> type[Driver]:
    """The driver class called ``name`` (one of :data:`DRIVERS`)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown driver {name!r}; choose one of {', '.join(DRIVERS)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)
