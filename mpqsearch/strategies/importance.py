"""Layer importance from per-layer task predictors (seed 002, MSQ), bits from importance.

MSQ inserts a task predictor (:mod:`.predictor`: pyramid pooling plus an imprinted cosine
classifier) after every layer of the float network, takes each predictor's accuracy as that
layer's accuracy, judges each layer's importance from it and sets the bit widths from the
importance. The abstract leaves the details open; this module's choices:

- **Samples and labels** come from the workload's calibration inputs only (evaluation data must
  not choose policies). A classifier (a model whose output is ``[N, K]``) labels each input with
  its own FP32 prediction, as in distillation: it needs no dataset labels, and the last layer's
  predictor then measures agreement with the float model, the quantity a quantized model must
  keep. A model with a dense output (super-resolution) gets pseudo-labels: each calibration image
  is cut into ``patch`` x ``patch`` input-pixel cells (the few large SR images give hundreds of
  samples; see :mod:`.predictor` for how the cells are cut from every feature map), the FP32
  output of each cell is pyramid-pooled, the pooled vector has its mean removed and is scaled to
  unit length (so clusters follow the pattern inside the cell, edges and colour contrast, rather
  than its overall brightness), and scikit-learn's k-means (``clusters`` clusters, fixed
  ``random_state``) gives the labels.
- **Held out**: a fixed-seed random ``holdout`` fraction of the samples scores the predictors
  imprinted on the rest.
- **Importance** of a layer is its accuracy gain over the layer before it in network order; the
  first layer's is over chance (the held-out accuracy of always predicting the most frequent
  training class). A negative gain (a layer whose features classify worse than its
  predecessor's, e.g. a residual branch or a layer computing an SR residual whose pooled values
  say little about the picture) counts as zero: the layer adds nothing the predictor can see.
- **Bits**: weights by importance, activations at ``act_bits`` everywhere (default 8: the
  abstract allocates per-layer bit widths, 8-bit activations are the int8 runtimes' native width,
  and fewer activation bits ruin SR outputs). For each size ``budget`` (a ratio to the FP32
  size, :func:`~mpqsearch.search_spaces.costs.model_size_bytes`), every searched layer starts at
  its lowest weight choice and a greedy loop raises one layer at a time to its next choice,
  picking the largest expected error reduction per added weight bit among the raises that keep
  the policy within the budget. A layer's expected error at ``b`` bits is modelled as
  ``weight * 4**-b`` (the noise power of a ``b``-bit uniform quantizer), so returns diminish and
  bits spread over layers in proportion to the log of their importance rather than all going to
  the most important layer first; ``weight`` is the importance plus 1 % of the largest
  importance, so layers the predictor finds useless still take, cheapest first, bytes the
  important layers cannot use. If even the lowest choices exceed a budget, that smallest policy
  is its seed (with a warning).
- **Prune**: the least important ``prune_fraction`` of the searched layers (ties: earlier layers
  first) keep only weight choices of at most ``prune_bits`` bits (their lowest choice if none is
  that low).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..policy import Policy
from ..quant.spec import check_bits
from ..search_spaces import SearchSpace
from ..search_spaces.costs import fp32_size_bytes, model_size_bytes, size_ratio
from ..trials.evaluate import Evaluator
from ..trials.threads import torch_threads
from .base import Strategy, StrategyContext, distinct, policy_from_bits, register_strategy
from .predictor import imprinted_accuracy, majority_accuracy, pooled_features

FLOOR_SHARE = 0.01
"""Every layer's allocation weight is at least this share of the largest importance."""


def _fraction(value: Any, option: str, *, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{option} must be a number, got {value!r}")
    if value < 0 or value > 1 or (low_open and value == 0) or (high_open and value == 1):
        bounds = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{option} must lie in {bounds}, got {value!r}")
    return float(value)


def _positive_int(value: Any, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value


def _bits(value: Any, option: str) -> int:
    try:
        return check_bits(value)
    except ValueError as err:
        raise ValueError(f"{option}: {err}") from None


@dataclass(frozen=True)
class LayerAccuracy:
    """What the predictors measured: per-layer held-out accuracy (layers that never ran on the
    calibration data are absent), chance level, and the number of samples and classes."""

    accuracy: dict[str, float]
    chance: float
    samples: int
    classes: int
    pseudo_labels: bool


def pseudo_labels(output: torch.Tensor, clusters: int, random_state: int) -> torch.Tensor:
    """k-means cluster of each pooled output (mean removed, unit length; see the module docstring)."""
    from sklearn.cluster import KMeans  # imported on use: only dense-output models need it

    if len(output) < clusters:
        raise ValueError(f"{len(output)} calibration samples cannot form {clusters} clusters; "
                         "lower clusters or patch")
    centred = output.double() - output.double().mean(dim=1, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    labels = KMeans(n_clusters=clusters, n_init=10, random_state=random_state).fit_predict(unit.numpy())
    return torch.as_tensor(labels, dtype=torch.long)


@register_strategy("importance")
class ImportanceStrategy(Strategy):
    """MSQ (seed 002): per-layer predictor accuracy, importance as the gain over the layer
    before, weight bits by importance under size budgets (see the module docstring).

    Options: ``budget`` (a size ratio to FP32 or a list of them; one seed each, repeats
    dropped; default 0.15, 0.2, 0.25), ``act_bits`` (default 8), ``grids`` (pyramid pooling sizes, default 1, 2, 4),
    ``holdout`` (held-out fraction, default 0.5), ``clusters`` and ``patch`` (pseudo-labels of
    dense-output models, default 10 clusters of 8x8-pixel cells), ``random_state`` (split and
    k-means, default 0), ``prune_fraction`` (default 0.25) and ``prune_bits`` (default 4).
    """

    score_label = "predictor accuracy gain"

    def __init__(self, budget: float | Sequence[float] = (0.15, 0.2, 0.25), act_bits: int = 8,
                 grids: Sequence[int] = (1, 2, 4), holdout: float = 0.5, clusters: int = 10, patch: int = 8,
                 random_state: int = 0, prune_fraction: float = 0.25, prune_bits: int = 4) -> None:
        budgets = [budget] if isinstance(budget, (int, float)) else budget
        if isinstance(budgets, str) or not isinstance(budgets, Sequence) or not budgets:
            raise ValueError(f"budget must be a size ratio or a non-empty list of them, got {budget!r}")
        for i, ratio in enumerate(budgets):
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
                raise ValueError(f"budget[{i}] must be a positive size ratio to FP32, got {ratio!r}")
        self.budgets = [float(ratio) for ratio in budgets]
        self.act_bits = _bits(act_bits, "act_bits")
        self.prune_bits = _bits(prune_bits, "prune_bits")
        if isinstance(grids, (str, int)) or not isinstance(grids, Sequence) or not grids:
            raise ValueError(f"grids must be a non-empty list of pooling sizes, got {grids!r}")
        self.grids = tuple(_positive_int(g, f"grids[{i}]") for i, g in enumerate(grids))
        self.holdout = _fraction(holdout, "holdout", low_open=True, high_open=True)
        self.clusters = _positive_int(clusters, "clusters", 2)
        self.patch = _positive_int(patch, "patch")
        self.random_state = _positive_int(random_state, "random_state", 0)
        self.prune_fraction = _fraction(prune_fraction, "prune_fraction", low_open=False, high_open=False)
        self._measured: tuple[Evaluator, LayerAccuracy] | None = None

    # --- measuring ------------------------------------------------------------------------
    def layer_accuracy(self, context: StrategyContext) -> LayerAccuracy:
        """The predictors' accuracies on ``context``'s workload, computed once per evaluator."""
        evaluator = context.evaluator
        if self._measured is None or self._measured[0] is not evaluator:
            with torch_threads(evaluator.threads):
                self._measured = (evaluator, self._measure(evaluator))
        return self._measured[1]

    def accuracies(self, context: StrategyContext) -> dict[str, float]:
        """Per-layer predictor accuracy in network order (for the report's plot)."""
        return self.layer_accuracy(context).accuracy

    def _measure(self, evaluator: Evaluator) -> LayerAccuracy:
        workload, model = evaluator.workload, evaluator.model
        with torch.no_grad():
            example = workload.example_input
            logits = (model(*example) if isinstance(example, (tuple, list)) else model(example)).dim() == 2
        features = pooled_features(model, workload.calib_data, self.grids, None if logits else self.patch)
        labels = (features.output.argmax(dim=1) if logits
                  else pseudo_labels(features.output, self.clusters, self.random_state))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.random_state))
        held = max(1, min(len(labels) - 1, round(self.holdout * len(labels))))
        test, train = order[:held], order[held:]
        accuracy = {name: imprinted_accuracy(features.layers[name][train], labels[train],
                                             features.layers[name][test], labels[test])
                    for name in evaluator.space.names if name in features.layers}
        return LayerAccuracy(accuracy, majority_accuracy(labels[train], labels[test]), len(labels),
                             len(labels.unique()), not logits)

    def scores(self, context: StrategyContext) -> dict[str, float]:
        """Importance per layer: accuracy gain over the layer before (negative gains count as 0;
        a layer that never ran scores 0)."""
        measured = self.layer_accuracy(context)
        before = measured.chance
        importance = {}
        for name in context.space.names:
            if name not in measured.accuracy:
                importance[name] = 0.0
                continue
            importance[name] = max(0.0, measured.accuracy[name] - before)
            before = measured.accuracy[name]
        return importance

    # --- seeding and pruning --------------------------------------------------------------
    def seed(self, context: StrategyContext) -> list[Policy]:
        importance = self.scores(context)
        return distinct(self._allocate(context, importance, ratio) for ratio in self.budgets)

    def _allocate(self, context: StrategyContext, importance: dict[str, float], ratio: float) -> Policy:
        space = context.space
        budget = ratio * fp32_size_bytes(space)
        floor = FLOOR_SHARE * (max(importance.values(), default=0.0) or 1.0)
        searched = [n for n in space.names if len(space.weight_choices[n]) > 1]
        choices = {n: sorted(space.weight_choices[n]) for n in searched}
        bits = {n: choices[n][0] for n in searched}
        policy = policy_from_bits(space, bits, self.act_bits)
        if model_size_bytes(space, policy) > budget:
            warnings.warn(f"importance: even the lowest weight bits exceed the size budget {ratio:g} of FP32 "
                          f"({size_ratio(space, policy):.3f}); seeding them", stacklevel=2)
            return policy

        def gain_per_bit(name: str) -> float:
            now = bits[name]
            raised = choices[name][choices[name].index(now) + 1]
            reduction = (importance[name] + floor) * (4.0 ** -now - 4.0 ** -raised)
            return reduction / (space.layer(name).weight_params * (raised - now))

        open_layers = [n for n in searched if bits[n] != choices[n][-1]]
        while open_layers:
            name = max(open_layers, key=gain_per_bit)  # ties: the earlier layer (max keeps the first)
            wanted = {**bits, name: choices[name][choices[name].index(bits[name]) + 1]}
            candidate = policy_from_bits(space, wanted, self.act_bits)
            if model_size_bytes(space, candidate) > budget:
                open_layers.remove(name)  # sizes only grow: this raise never fits again
                continue
            bits, policy = wanted, candidate
            if bits[name] == choices[name][-1]:
                open_layers.remove(name)
        return policy

    def prune(self, context: StrategyContext) -> SearchSpace:
        space = context.space
        importance = self.scores(context)
        searched = [n for n in space.names if len(space.weight_choices[n]) > 1]
        ranked = sorted(searched, key=lambda n: importance[n])  # stable: earlier layers first on ties
        capped = ranked[:int(self.prune_fraction * len(searched))]
        weight = {n: [b for b in space.weight_choices[n] if b <= self.prune_bits] or [min(space.weight_choices[n])]
                  for n in capped}
        return space.restrict(weight=weight)
