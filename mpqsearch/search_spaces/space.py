"""The search space: per-layer weight and activation bit choices, with tied activations.

Parameter names are ``"<layer>/w"`` for a layer's weight bits and ``"<layer>/a"`` for its
activation bits; layers whose activations are tied (joined by add or concat, seed 004) share one
``"<group>/a"`` parameter, ``<group>`` being ``tied0``, ``tied1``, ... in network order. A layer
with a single choice is fixed and not rendered as a parameter.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from ..policy import Fingerprint, Policy
from ..quant.spec import (
    DEFAULT_ACT_BITS,
    DEFAULT_INPUT_BITS,
    DEFAULT_WEIGHT_BITS,
    EXPORT_TARGETS,
    FLOAT_BITS,
    LayerQuantConfig,
    check_bits,
    default_target,
)
from .layers import LayerInfo, StageMap, discover_layers

Choices = tuple[int, ...]


def _choices(bits: Iterable[int], what: str) -> Choices:
    values = tuple(bits)
    if not values:
        raise ValueError(f"{what}: no bit choices")
    for b in values:
        try:
            check_bits(b)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
    return tuple(dict.fromkeys(values))


def _match(patterns: Iterable[str], names: Sequence[str], what: str) -> dict[str, list[str]]:
    found = {}
    for pattern in patterns:
        found[pattern] = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not found[pattern]:
            raise ValueError(f"{what} {pattern!r} matches no quantizable layer (layers: {', '.join(names)})")
    return found


class SearchSpace:
    """What every layer may choose; renders itself for NNI and Optuna and maps choices to policies.

    Example::

        space = SearchSpace.from_model(model, torch.randn(1, 3, 32, 32), weight_bits=[4, 6, 8])
        nni_space = space.to_nni()             # {"stem/w": {"_type": "choice", ...}, ...}
        policy = space.policy_from_params(params_from_the_tuner)
    """

    def __init__(self, layers: Sequence[LayerInfo], weight_choices: Mapping[str, Iterable[int]],
                 act_choices: Mapping[str, Iterable[int]], *, other_params: int = 0,
                 base: LayerQuantConfig = LayerQuantConfig(), input_bits: int = DEFAULT_INPUT_BITS,
                 target: str | None = None) -> None:
        self.layers = tuple(layers)
        self._by_name = {layer.name: layer for layer in self.layers}
        self.weight_choices = {n: _choices(weight_choices[n], f"{n} weight bits") for n in self._by_name}
        self.act_choices = {n: _choices(act_choices[n], f"{n} activation bits") for n in self._by_name}
        self.other_params = other_params
        self.base = base
        self.input_bits = check_bits(input_bits)
        target = default_target() if target is None else target
        if target not in EXPORT_TARGETS:
            raise ValueError(f"target must be one of {', '.join(EXPORT_TARGETS)}, got {target!r}")
        self.target = target
        self.tied_groups: dict[str, tuple[str, ...]] = {}
        for layer in self.layers:
            if layer.tied_group:
                self.tied_groups[layer.tied_group] = self.tied_groups.get(layer.tied_group, ()) + (layer.name,)
        clash = set(self.tied_groups) & set(self._by_name)
        if clash:
            raise ValueError(f"layer name {sorted(clash)[0]!r} clashes with a tied-group name")
        for group, members in self.tied_groups.items():
            shared = [b for b in self.act_choices[members[0]] if all(b in self.act_choices[m] for m in members)]
            if not shared:
                raise ValueError(f"{group} ({', '.join(members)}) share one activation, but their activation "
                                 "bit choices have nothing in common; give them the same choices")
            for m in members:
                self.act_choices[m] = tuple(shared)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_input: Any,
        *,
        weight_bits: Iterable[int] = DEFAULT_WEIGHT_BITS,
        act_bits: Iterable[int] = DEFAULT_ACT_BITS,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        overrides: Mapping[str, Mapping[str, Iterable[int]]] | None = None,
        stages: StageMap | None = None,
        base: LayerQuantConfig = LayerQuantConfig(),
        input_bits: int = DEFAULT_INPUT_BITS,
        target: str | None = None,
    ) -> SearchSpace:
        """Discover the layers of ``model`` and give each the same choices, then narrow them.

        ``include``/``exclude`` are glob patterns of layer names (excluded layers stay float);
        ``overrides`` maps a glob pattern to ``{"weight_bits": [...], "act_bits": [...]}``;
        ``stages`` maps layer names or dotted prefixes to stage names (default: the top-level
        child module); ``base`` holds the non-bit settings (scale kind, granularity, clipping)
        and ``input_bits`` the model inputs' bits of the policies this space produces, ``target``
        the CPUs they are made for (:data:`~mpqsearch.quant.spec.EXPORT_TARGETS`; default this
        CPU's, :func:`~mpqsearch.quant.spec.default_target`). Every
        pattern must match a layer.
        """
        layers = discover_layers(model, example_input, stages)
        names = [layer.name for layer in layers]
        weight = _choices(weight_bits, "weight_bits")
        act = _choices(act_bits, "act_bits")
        included = set(names) if include is None else {
            n for ms in _match(include, names, "include").values() for n in ms}
        excluded = {n for ms in _match(exclude, names, "exclude").values() for n in ms}
        weight_choices = {n: weight if n in included and n not in excluded else (FLOAT_BITS,) for n in names}
        act_choices = {n: act if n in included and n not in excluded else (FLOAT_BITS,) for n in names}
        overrides = dict(overrides or {})
        for pattern, matched in _match(overrides, names, "override").items():
            unknown = set(overrides[pattern]) - {"weight_bits", "act_bits"}
            if unknown:
                raise ValueError(f"override {pattern!r}: unknown key {sorted(unknown)[0]!r} "
                                 "(expected weight_bits, act_bits)")
            for n in matched:
                if "weight_bits" in overrides[pattern]:
                    weight_choices[n] = _choices(overrides[pattern]["weight_bits"], f"override {pattern!r} weight_bits")
                if "act_bits" in overrides[pattern]:
                    act_choices[n] = _choices(overrides[pattern]["act_bits"], f"override {pattern!r} act_bits")
        modules = dict(model.named_modules())
        layer_params = {id(p) for n in names for p in modules[n].parameters(recurse=False)}
        other = sum(p.numel() for p in model.parameters() if id(p) not in layer_params)
        other -= sum(layer.folded_params for layer in layers)
        return cls(layers, weight_choices, act_choices, other_params=other, base=base, input_bits=input_bits,
                   target=target)

    # --- what the space holds -------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def layer(self, name: str) -> LayerInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r} in the search space") from None

    @property
    def float_layers(self) -> tuple[str, ...]:
        """Layers kept in float: their only choice is 32 bits for weights and activations."""
        return tuple(n for n in self.names if self.weight_choices[n] == (FLOAT_BITS,)
                     and self.act_choices[n] == (FLOAT_BITS,))

    def fingerprint(self) -> Fingerprint:
        return {layer.name: layer.weight_shape for layer in self.layers}

    def act_param(self, layer: str) -> str:
        """The parameter that holds ``layer``'s activation bits (shared by a tied group)."""
        group = self.layer(layer).tied_group
        return f"{group or layer}/a"

    def parameters(self) -> dict[str, Choices]:
        """Every parameter with more than one choice, in network order."""
        params: dict[str, Choices] = {}
        for n in self.names:
            if len(self.weight_choices[n]) > 1:
                params[f"{n}/w"] = self.weight_choices[n]
            if len(self.act_choices[n]) > 1:
                params.setdefault(self.act_param(n), self.act_choices[n])
        return params

    # --- renderings -----------------------------------------------------------------------
    def to_nni(self) -> dict[str, dict[str, Any]]:
        """NNI search space: one ``choice`` parameter per searched setting."""
        return {name: {"_type": "choice", "_value": list(choices)} for name, choices in self.parameters().items()}

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions (categorical: choice sets need not be contiguous)."""
        from optuna.distributions import CategoricalDistribution

        return {name: CategoricalDistribution(list(choices)) for name, choices in self.parameters().items()}

    # --- policies -------------------------------------------------------------------------
    def policy_from_params(self, params: Mapping[str, Any]) -> Policy:
        """The policy for one assignment of :meth:`parameters` (a tuner's or sampler's output)."""
        space = self.parameters()
        unknown = [k for k in params if k not in space]
        if unknown:
            raise KeyError(f"unknown search-space parameter {unknown[0]!r}")
        for name, choices in space.items():
            if name not in params:
                raise KeyError(f"missing search-space parameter {name!r}")
            if params[name] not in choices:
                raise ValueError(f"parameter {name!r}: {params[name]!r} is not one of {list(choices)}")
        layers = {}
        for n in self.names:
            weight = params.get(f"{n}/w", self.weight_choices[n][0])
            act = params.get(self.act_param(n), self.act_choices[n][0])
            layers[n] = replace(self.base, weight_bits=int(weight), act_bits=int(act))
        return Policy(layers, self.fingerprint(), input_bits=self.input_bits, target=self.target)

    def params_from_policy(self, policy: Policy) -> dict[str, int]:
        """The parameter assignment of ``policy``; raises if it lies outside this space."""
        policy.check_model(self)
        params: dict[str, int] = {}
        for name, choices in self.parameters().items():
            layer, kind = name.rsplit("/", 1)
            member = self.tied_groups.get(layer, (layer,))[0]
            config = policy.layers[member]
            value = config.weight_bits if kind == "w" else config.act_bits
            if value not in choices:
                raise ValueError(f"policy sets {name!r} to {value}, outside the choices {list(choices)}")
            params[name] = value
        return params

    def restrict(self, weight: Mapping[str, Iterable[int]] | None = None,
                 act: Mapping[str, Iterable[int]] | None = None) -> SearchSpace:
        """A narrower space: the given layers keep only the listed choices (which must be a
        non-empty subset of their current ones); for a tied layer, its whole group is narrowed."""
        weight_choices = dict(self.weight_choices)
        act_choices = dict(self.act_choices)
        kinds = ((weight_choices, weight or {}, "weight"), (act_choices, act or {}, "activation"))
        for target, narrowed, kind in kinds:
            for n, bits in narrowed.items():
                members = self.tied_groups.get(self.layer(n).tied_group, (n,)) if kind == "activation" else (n,)
                kept = tuple(b for b in target[n] if b in set(bits))
                if not kept:
                    raise ValueError(f"{n}: none of {list(bits)} is among its {kind} choices {list(target[n])}")
                for m in members:
                    target[m] = kept
        return SearchSpace(self.layers, weight_choices, act_choices, other_params=self.other_params, base=self.base,
                           input_bits=self.input_bits, target=self.target)

    def __repr__(self) -> str:
        return f"SearchSpace({len(self.layers)} layers, {len(self.parameters())} parameters)"

