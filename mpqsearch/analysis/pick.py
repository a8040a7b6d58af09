"""Pick rules: which trial of an experiment to take home.

Rules (among completed trials that met the experiment's constraints)::

    best:top1                         the best value of a metric, in its direction
    min:size_ratio where top1_drop<=0.01   the smallest (or max:) value among trials meeting
                                      every condition (joined by ``and`` or commas)
    knee                              the balanced point of the front over the experiment's objectives

Ties go to the trial better in the experiment's objectives, then to the earlier trial.

Example::

    row = pick(load_results("1ix0tvm3"), "min:size_ratio where top1_drop<=0.05")
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from .pareto import knee, objectives_of, pareto_front
from .table import Results, TrialRow

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_RULE = re.compile(r"^\s*(best|min|max):\s*([A-Za-z_][\w.]*)\s*(?:where\s+(.+))?$")


class PickError(ValueError):
    """A rule that cannot be read, names an unknown metric, or matches no trial."""


Condition = tuple[str, str, float]


def parse_conditions(text: str) -> list[Condition]:
    """``"psnr_drop<=0.1 and size_ratio<0.3"`` -> ``[("psnr_drop", "<=", 0.1), ...]``."""
    conditions = []
    for part in re.split(r",|\band\b", text):
        match = _CONDITION.match(part)
        if not match:
            raise PickError(f"cannot read condition {part.strip()!r} (expected METRIC OP NUMBER, e.g. psnr_drop<=0.1)")
        conditions.append((match.group(1), match.group(2), float(match.group(3))))
    return conditions


def _check_metric(results: Results, name: str) -> None:
    recorded = sorted({m for row in results.complete() for m in row.metrics})
    if name not in recorded:
        raise PickError(f"unknown metric {name!r} (recorded: {', '.join(recorded) or 'none'})")


def _tie_key(results: Results, row: TrialRow) -> tuple[float, ...]:
    signed = [row.metrics[m] if d == "minimize" else -row.metrics[m]
              for m, d in objectives_of(results) if m in row.metrics]
    return (*signed, row.number)


def pick(results: Results, rule: str) -> TrialRow:
    """The trial that ``rule`` selects; :class:`PickError` (one line) if it matches none."""
    candidates = results.complete(feasible_only=True)
    if not candidates:
        raise PickError(f"rule {rule!r} matches nothing: experiment {results.experiment} has no completed "
                        f"trial that meets its constraints ({len(results.rows)} trials)")
    if rule.strip() == "knee":
        return knee(pareto_front(candidates, objectives_of(results)), objectives_of(results))
    match = _RULE.match(rule)
    if not match:
        raise PickError(f"cannot read rule {rule!r} (expected best:METRIC, min:METRIC where COND, max:..., or knee)")
    kind, metric, where = match.groups()
    _check_metric(results, metric)
    conditions = parse_conditions(where) if where else []
    for name, _, _ in conditions:
        _check_metric(results, name)
    matching = [row for row in candidates if metric in row.metrics
                and all(name in row.metrics and _OPS[op](row.metrics[name], bound) for name, op, bound in conditions)]
    if not matching:
        closest = ", ".join(f"closest {name} {_closest(candidates, name, op):.4g}" for name, op, _ in conditions)
        raise PickError(f"rule {rule!r} matches nothing: none of {len(candidates)} completed trials has "
                        f"{where.strip()} ({closest})")
    direction = results.direction(metric) if kind == "best" else {"min": "minimize", "max": "maximize"}[kind]
    sign = 1.0 if direction == "minimize" else -1.0
    return min(matching, key=lambda row: (sign * row.metrics[metric], *_tie_key(results, row)))


def _closest(rows: list[TrialRow], name: str, op: str) -> float:
    """The value of ``name`` nearest to meeting an upper (``<``) or lower (``>``) bound."""
    values = [row.metrics[name] for row in rows if name in row.metrics]
    return max(values) if op.startswith(">") else min(values)
