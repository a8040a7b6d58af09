"""Pydantic validation errors as one line: the dotted key and what is wrong with its value.

Every schema a user writes (the experiment file, an image-folder workload) reports its first
mistake through :func:`describe_error`, so the messages read alike: ``budget.max_trials: must be a
positive integer, got 0``, ``search_space.scale: must be one of product, shift, got 'log'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _key(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if part == "[key]":
            continue
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _choices(ctx: Mapping[str, Any]) -> str:
    """Pydantic's ``'a', 'b' or 'c'`` as ``a, b, c``."""
    return str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")


def _problem(error: Mapping[str, Any]) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error" and error["loc"][-1:] == ("[key]",):
        return f"unknown key (expected one of {_choices(ctx)})"
    if kind == "missing":
        return "missing"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be one of {_choices(ctx)}, got {value!r}"
    if kind in ("less_than_equal", "greater_than_equal"):
        bound = "at most" if kind == "less_than_equal" else "at least"
        return f"must be {bound} {ctx.get('le', ctx.get('ge'))}, got {value!r}"
    wanted = {"dict_type": "a mapping", "model_type": "a mapping", "dataclass_type": "a mapping",
              "list_type": "a list", "string_type": "a string", "float_type": "a number", "int_type": "an integer",
              "bool_type": "true or false"}.get(kind)
    if wanted:
        return f"must be {wanted}, got {value!r}"
    return f"{error['msg']}, got {value!r}"


def describe_error(error: Mapping[str, Any]) -> tuple[str, str]:
    """``(dotted key, problem)`` for one entry of ``ValidationError.errors()``."""
    return _key(error["loc"]), _problem(error)
