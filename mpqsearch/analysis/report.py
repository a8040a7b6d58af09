"""The report: one self-contained HTML page (plotly.js inlined, no network needed) with the
figures of an experiment and a table of its Pareto front.

Example::

    write_report(load_results("1ix0tvm3"), "report.html")
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import figures
from .pareto import objectives_of, pareto_front
from .table import Results, TrialRow

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}.figure{margin:1.5em 0}"""


def front_table(results: Results, front: list[TrialRow]) -> str:
    """The front as an HTML table: trial, strategy, every recorded metric, duration."""
    metrics = sorted({m for row in front for m in row.metrics}, key=lambda m: (m not in results.directions, m))
    objectives = [o.metric for o in results.objectives]
    metrics = objectives + [m for m in metrics if m not in objectives]
    head = "".join(f"<th>{html.escape(figures.label(c))}</th>" for c in ["trial", "strategy", *metrics, "seconds"])
    body = []
    for row in front:
        cells = [str(row.number), html.escape(row.strategy or "?")]
        cells += [f"{row.metrics[m]:.6g}" if m in row.metrics else "" for m in metrics]
        cells.append(f"{row.duration:.1f}" if row.duration is not None else "")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def report_figures(results: Results, compare: Mapping[str, Results] | None = None,
                   strategy_scores: Mapping[str, Mapping[str, float]] | None = None,
                   baselines: Sequence[TrialRow] = ()) -> dict[str, go.Figure]:
    """The report's figures by name: 2D front (with ``baselines`` evaluated apart), 3D front,
    bits heatmap (when policies are known), hypervolume (this experiment and ``compare``'s),
    strategy scores (``strategy_scores``, else those the experiment's strategies recorded)."""
    spec = objectives_of(results)
    if not pareto_front(results.complete(), spec):
        return {}  # nothing measured yet: the page says so
    front = pareto_front(results.complete(feasible_only=True), spec)
    found = {"front-2d": figures.front_2d(results, baselines=baselines), "front-3d": figures.front_3d(results)}
    if results.space is not None and front:
        found["bits"] = figures.bits_heatmap(results, front)
    found["hypervolume"] = figures.hypervolume_figure({results.experiment: results, **(compare or {})},
                                                      [m for m, _ in spec])
    strategy_scores = strategy_scores or results.strategy_scores
    if strategy_scores:
        layers = [layer.name for layer in results.space.layers] if results.space is not None else None
        found["strategy-scores"] = figures.strategy_scores_figure(strategy_scores, layers)
    return found


def render_report(results: Results, compare: Mapping[str, Results] | None = None,
                  strategy_scores: Mapping[str, Mapping[str, float]] | None = None,
                  baselines: Sequence[TrialRow] = ()) -> str:
    """The whole page as a string."""
    spec = objectives_of(results)
    front = pareto_front(results.complete(feasible_only=True), spec)
    states = {s: sum(r.state == s for r in results.rows) for s in {r.state for r in results.rows}}
    objective_text = ", ".join(f"{d} {m}" for m, d in spec)
    parts = [f"<h1>Experiment {html.escape(results.experiment)}</h1>",
             f"<p>{html.escape(results.driver)} driver, workload {html.escape(results.workload or '?')}; "
             f"{len(results.rows)} trials ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}); "
             f"objectives: {html.escape(objective_text)}; report written {time.strftime('%Y-%m-%d %H:%M')}</p>"]
    for name, fig in report_figures(results, compare, strategy_scores, baselines).items():
        parts.append(f'<div class="figure">{fig.to_html(full_html=False, include_plotlyjs=False, div_id=name)}</div>')
    parts.append(f"<h2>Pareto front ({len(front)} of {len(results.complete())} completed trials)</h2>")
    parts.append(front_table(results, front))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>mpqsearch {html.escape(results.experiment)}"
            f"</title><style>{_STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            f"<body>{''.join(parts)}</body></html>")


def write_report(results: Results, path: str | os.PathLike, **options) -> Path:
    """Write :func:`render_report` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(results, **options), encoding="utf-8")
    return path
