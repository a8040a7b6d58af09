"""plotly figures of an experiment: fronts, per-layer bits, hypervolume, strategy scores.

Every function returns a ``plotly.graph_objects.Figure``; :mod:`.report` puts them in one page.

Example::

    results = load_results("1ix0tvm3")
    front_2d(results).show()
    bits_heatmap(results, pareto_front(results.complete(True), objectives_of(results))).show()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..policy import Policy
from ..quant.spec import FLOAT_BITS
from .pareto import hypervolume_history, nadir, objectives_of, pareto_front
from .table import Results, TrialRow

LABELS = {"size_ratio": "size / FP32", "bops_ratio": "BOPs / FP32", "latency_ms": "latency (ms)",
          "size_bytes": "size (bytes)"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def uniform_bits(policy: Policy | None) -> tuple[int, int] | None:
    """``(weight_bits, act_bits)`` if every quantized layer of ``policy`` has the same bits."""
    if policy is None:
        return None
    pairs = {(c.weight_bits, c.act_bits) for c in policy.layers.values() if c.weight_bits != FLOAT_BITS}
    return pairs.pop() if len(pairs) == 1 else None


def uniform_baselines(rows: Sequence[TrialRow]) -> dict[str, TrialRow]:
    """Completed uniform-precision trials (seeded by the ``uniform`` strategy or found by the
    search), one per bit pair, labelled ``W8A8``."""
    found = {}
    for row in rows:
        bits = uniform_bits(row.policy) if row.state == "complete" else None
        if bits is not None:
            found.setdefault(f"W{bits[0]}A{bits[1]}", row)
    return found


def _hover(row: TrialRow, metrics: Sequence[str]) -> str:
    values = "<br>".join(f"{label(m)}: {row.metrics[m]:.4g}" for m in metrics if m in row.metrics)
    return f"trial {row.number} ({row.strategy or '?'})<br>{values}"


def _default_axes(results: Results, x: str | None, y: str | None) -> tuple[str, str]:
    x = x or "size_ratio"
    y = y or next((m for m, _ in objectives_of(results) if m != x), None)
    if y is None:
        raise ValueError(f"experiment {results.experiment}: name the metric to plot against {x}")
    return x, y


def front_2d(results: Results, x: str | None = None, y: str | None = None, colour: str = "latency_ms",
             baselines: Sequence[TrialRow] = ()) -> go.Figure:
    """Every completed trial (grey), the feasible front (coloured by ``colour`` when recorded)
    and the uniform-precision baselines (labelled diamonds): those among the trials, and
    ``baselines`` evaluated apart (see :mod:`.baselines`)."""
    x, y = _default_axes(results, x, y)
    objectives = [(x, results.direction(x)), (y, results.direction(y))]
    done = [r for r in results.complete() if x in r.metrics and y in r.metrics]
    front = pareto_front([r for r in done if r.feasible], objectives)
    shown = [x, y, colour]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=results.column(x, done), y=results.column(y, done), mode="markers", name="trials",
                             marker={"color": "lightgrey", "size": 7}, hovertext=[_hover(r, shown) for r in done],
                             hoverinfo="text"))
    coloured = bool(front) and all(colour in r.metrics for r in front)
    marker = {"size": 10, "color": results.column(colour, front) if coloured else "royalblue"}
    if coloured:
        marker.update(colorscale="Viridis", showscale=True, colorbar={"title": label(colour)})
    fig.add_trace(go.Scatter(x=results.column(x, front), y=results.column(y, front), mode="lines+markers",
                             name="Pareto front", marker=marker, line={"color": "royalblue", "shape": "hv"},
                             hovertext=[_hover(r, shown) for r in front], hoverinfo="text"))
    marked = {**uniform_baselines([r for r in baselines if x in r.metrics and y in r.metrics]),
              **uniform_baselines(done)}
    if marked:
        rows = list(marked.values())
        fig.add_trace(go.Scatter(x=results.column(x, rows), y=results.column(y, rows), mode="markers+text",
                                 name="uniform precision", text=list(marked), textposition="top center",
                                 marker={"symbol": "diamond-open", "size": 15, "color": "firebrick",
                                         "line": {"width": 2}},
                                 hovertext=[_hover(r, shown) for r in rows], hoverinfo="text"))
    fig.update_layout(title=f"{label(y)} vs {label(x)}: experiment {results.experiment}",
                      xaxis_title=label(x), yaxis_title=label(y), template="plotly_white",
                      legend={"orientation": "h", "y": -0.18})
    return fig


def front_3d(results: Results, objectives: Sequence[str] | None = None) -> go.Figure:
    """Completed trials in three objectives (default: the first two objectives and latency, or
    BOPs without a latency backend), the feasible front highlighted."""
    if objectives is None:
        x, y = _default_axes(results, None, None)
        done = results.complete()
        third = "latency_ms" if done and all("latency_ms" in r.metrics for r in done) else "bops_ratio"
        objectives = [x, y, third]
    spec = objectives_of(results, objectives)
    done = [r for r in results.complete() if all(m in r.metrics for m, _ in spec)]
    front = pareto_front([r for r in done if r.feasible], spec)
    names = [m for m, _ in spec]
    fig = go.Figure()
    for rows, name, style in ((done, "trials", {"color": "lightgrey", "size": 4}),
                              (front, "Pareto front", {"color": "royalblue", "size": 6})):
        fig.add_trace(go.Scatter3d(x=results.column(names[0], rows), y=results.column(names[1], rows),
                                   z=results.column(names[2], rows), mode="markers", name=name, marker=style,
                                   hovertext=[_hover(r, names) for r in rows], hoverinfo="text"))
    fig.update_layout(title=f"Pareto front in {', '.join(map(label, names))}", template="plotly_white",
                      scene={"xaxis_title": label(names[0]), "yaxis_title": label(names[1]),
                             "zaxis_title": label(names[2])})
    return fig


def _stage_marks(fig: go.Figure, stages: Sequence[str]) -> None:
    """Vertical lines between stages and their names above the plot."""
    start = 0
    for i in range(1, len(stages) + 1):
        if i == len(stages) or stages[i] != stages[start]:
            if i < len(stages):
                fig.add_vline(x=i - 0.5, line={"color": "black", "width": 2})
            fig.add_annotation(x=(start + i - 1) / 2, y=1.0, yref="paper", yanchor="bottom", text=stages[start],
                               showarrow=False, font={"size": 11})
            start = i


def bits_heatmap(results: Results, rows: Sequence[TrialRow], metric: str | None = None) -> go.Figure:
    """Weight and activation bits of each row's policy, layers in network order, stages marked."""
    if results.space is None:
        raise ValueError(f"experiment {results.experiment}: policies need the experiment file")
    rows = [r for r in rows if r.policy is not None]
    layers = [layer.name for layer in results.space.layers]
    metric = metric or (results.objectives[0].metric if results.objectives else None)
    names = [f"#{r.number}" + (f" {metric}={r.metrics[metric]:.4g}" if metric in r.metrics else "") for r in rows]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for i, attribute in enumerate(("weight_bits", "act_bits"), start=1):
        z = [[getattr(r.policy.layers[n], attribute) for n in layers] for r in rows]
        fig.add_trace(go.Heatmap(z=z, x=layers, y=names, colorscale="Blues", zmin=2, zmax=8,
                                 text=z, texttemplate="%{text}", showscale=i == 1,
                                 colorbar={"title": "bits"}), row=i, col=1)
        fig.update_yaxes(title_text="weights" if i == 1 else "activations", row=i, col=1)
    _stage_marks(fig, [results.space.layer(n).stage for n in layers])
    fig.update_layout(title="Per-layer bits of the front's policies (32 = float)", template="plotly_white",
                      height=260 + 40 * len(rows), margin={"t": 110})
    return fig


def hypervolume_figure(experiments: Mapping[str, Results], objectives: Sequence[str] | None = None,
                       reference: Sequence[float] | None = None) -> go.Figure:
    """Hypervolume after each trial for several experiments on one chart (same objectives and,
    by default, one reference point: the worst value of each objective over all of them)."""
    first = next(iter(experiments.values()))
    spec = objectives_of(first, objectives)
    if reference is None:
        reference = nadir([r for res in experiments.values() for r in res.complete()], spec)
    fig = go.Figure()
    for name, results in experiments.items():
        history = hypervolume_history(results.rows, spec, reference)
        fig.add_trace(go.Scatter(x=[n for n, _ in history], y=[v for _, v in history], mode="lines+markers",
                                 name=name, line={"shape": "hv"}))
    ref_text = ", ".join(f"{label(m)} {v:.4g}" for (m, _), v in zip(spec, reference, strict=True))
    fig.update_layout(title=f"Hypervolume over trials (reference: {ref_text})", xaxis_title="trials",
                      yaxis_title="hypervolume", template="plotly_white")
    return fig


def strategy_scores_figure(scores: Mapping[str, Mapping[str, float]], layers: Sequence[str] | None = None) -> go.Figure:
    """One bar chart per strategy of its score for each layer (``{strategy: {layer: score}}``,
    supplied by the caller: sensitivity, importance, channel ratio ...), layers in ``layers``'
    order (network order) or the first strategy's."""
    if not scores:
        raise ValueError("no strategy scores to plot")
    layers = list(layers or next(iter(scores.values())))
    fig = make_subplots(rows=len(scores), cols=1, shared_xaxes=True, subplot_titles=list(scores))
    for i, (strategy, by_layer) in enumerate(scores.items(), start=1):
        fig.add_trace(go.Bar(x=layers, y=[by_layer.get(n) for n in layers], name=strategy), row=i, col=1)
    fig.update_layout(title="Strategy scores per layer", template="plotly_white", showlegend=False,
                      height=220 * len(scores) + 100)
    return fig
