"""Resolving ``module:attribute`` references to user code (model factories, workloads).

Modules are found as ``python -m`` finds them: the current directory comes first on the import
path, so ``mymodule:factory`` works from the directory holding ``mymodule.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``module:attribute`` and return it; ``ValueError`` naming ``what`` and the spec if not callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r}: expected MODULE:FUNCTION, for example mpqsearch.example:build")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r}: {err}") from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise ValueError(f"{what} {spec!r}: {module_name} has no callable {attr!r}")
    return target
