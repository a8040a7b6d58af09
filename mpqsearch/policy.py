"""The policy: per-layer bit widths and quantizer settings, as a validated YAML file.

A policy file names the model it was made for by its layer fingerprint (each quantizable layer's
weight shape), so a policy for another model is refused instead of silently misapplied::

    schema_version: 1
    model:
      layers: {stem: [8, 3, 3, 3], head: [10, 8]}
    input_bits: 8                              # optional (default 8); 32 keeps model inputs float
    target: portable                           # optional (default: this CPU's): the CPUs it is made for
    layers:
      stem: {weight_bits: 8, act_bits: 8, scale: product, granularity: per_channel,
             weight_clipping: mse, act_clipping: max}
      head: {weight_bits: 4, act_bits: 8}    # omitted settings take their defaults
    weights: policy.weights.pt                 # optional: refined float weights
    metrics: {psnr: 31.2, size_ratio: 0.21}   # measured, optional
    provenance: {experiment: abc, trial: 7}   # where it came from, optional

``input_bits`` quantize the model inputs that layers with quantized weights read (images are
8-bit data); files written before it existed load with the default.

``weights`` names, relative to the policy file, a ``torch.save`` d float ``state_dict`` of the
whole model: a policy refined by QAT (:mod:`mpqsearch.trials.refine`) changes the weights, not only
the bits, and its metrics hold only with them. Applying it quantizes the model as for any policy
(weight scales from the model's own weights, activation scales from the calibration data), then
puts the refined weights in place of the float weights: QAT trained them on exactly that grid.

Files are read with ``yaml.safe_load`` only; every error is one line naming the file and the
offending key or layer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import nn

from .files import read_yaml
from .quant.graph import layer_fingerprint
from .quant.spec import DEFAULT_INPUT_BITS, EXPORT_TARGETS, FLOAT_BITS, LayerQuantConfig, check_bits, default_target

SCHEMA_VERSION = 1
_TOP_KEYS = {"schema_version", "model", "input_bits", "target", "layers", "weights", "metrics", "provenance"}
WEIGHTS_SUFFIX = ".weights.pt"
"""``policy.yaml`` keeps its refined weights in ``policy.weights.pt`` beside it."""
_REQUIRED_LAYER_KEYS = ("weight_bits", "act_bits")

Fingerprint = dict[str, tuple[int, ...]]
Weights = Path | Mapping[str, torch.Tensor]
_Fail = Callable[[str, str], "PolicyError"]


class PolicyError(ValueError):
    """A policy that cannot be read or does not fit the model; the message names file and key."""


class ModelIdentity(Protocol):
    """Anything that knows a model's layers (a :class:`~mpqsearch.search_spaces.SearchSpace`)."""

    def fingerprint(self) -> Fingerprint: ...


@dataclass
class Policy:
    """Per-layer :class:`LayerQuantConfig` for one model, the bits of its inputs, and what was
    measured and where from."""

    layers: dict[str, LayerQuantConfig]
    fingerprint: Fingerprint
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    input_bits: int = DEFAULT_INPUT_BITS
    """Bits of the model inputs that layers with quantized weights read; 32 keeps them float."""
    target: str = field(default_factory=default_target)
    """The CPUs the quantized model is made for (:data:`~mpqsearch.quant.spec.EXPORT_TARGETS`):
    ``portable`` keeps 8-bit weight levels within +-64, exact and fast on every x86 CPU; ``vnni``
    the full range, for CPUs with VNNI. Default: this CPU's (:func:`~mpqsearch.quant.spec.default_target`)."""
    weights: Weights | None = field(default=None, compare=False, repr=False)
    """Refined float weights replacing the model's: a ``state_dict`` in memory or the file holding
    one (``None``: the model's own weights)."""

    def __post_init__(self) -> None:
        check_bits(self.input_bits)
        if self.target not in EXPORT_TARGETS:
            raise ValueError(f"target must be one of {', '.join(EXPORT_TARGETS)}, got {self.target!r}")
        if isinstance(self.weights, (str, os.PathLike)):
            self.weights = Path(self.weights)

    def read_weights(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The refined weights (``None`` if the policy keeps the model's own), checked against
        ``model``'s ``state_dict`` (same keys and shapes); :class:`PolicyError` naming the file if
        they cannot be read or do not fit."""
        if self.weights is None:
            return None
        source, state = "weights", self.weights
        if isinstance(state, Path):
            source = str(state)
            try:
                state = torch.load(state, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several kinds for a missing or corrupt file
                raise PolicyError(f"{source}: cannot read the refined weights: {str(err).splitlines()[0]}") from None
        if not isinstance(state, Mapping):
            raise PolicyError(f"{source}: refined weights must be a state_dict, got {type(state).__name__}")
        expected = model.state_dict()
        for key in [*expected, *state]:
            if key not in state or key not in expected:
                where = "missing from the weights" if key not in state else f"not in {type(model).__name__}"
                raise PolicyError(f"{source}: refined weights do not fit the model: {key!r} {where}")
            if tuple(state[key].shape) != tuple(expected[key].shape):
                raise PolicyError(f"{source}: refined weights do not fit the model: {key!r} has shape "
                                  f"{list(state[key].shape)}, the model {list(expected[key].shape)}")
        return dict(state)

    @classmethod
    def uniform(cls, model: ModelIdentity | Mapping[str, tuple[int, ...]], weight_bits: int,
                act_bits: int, *, input_bits: int | None = None, **options: Any) -> Policy:
        """The same bits for every layer. Layers that ``model`` keeps in float (a search space's
        excluded layers, listed by its ``float_layers``) stay at 32 bits; ``input_bits`` defaults
        to the search space's (its ``input_bits``), else 8. The other settings (scale kind,
        granularity, clipping) are the search space's ``base`` ones, as in its policies, unless
        ``options`` name them."""
        fingerprint = dict(model.fingerprint()) if hasattr(model, "fingerprint") else dict(model)
        keep_float = set(getattr(model, "float_layers", ()))
        base = getattr(model, "base", None)
        settings = {k: v for k, v in base.to_dict().items() if not k.endswith("bits")} if base is not None else {}
        quantized = LayerQuantConfig(weight_bits, act_bits, **(settings | options))
        floating = replace(quantized, weight_bits=FLOAT_BITS, act_bits=FLOAT_BITS)
        layers = {name: floating if name in keep_float else quantized for name in fingerprint}
        if input_bits is None:
            input_bits = getattr(model, "input_bits", DEFAULT_INPUT_BITS)
        return cls(layers, {k: tuple(v) for k, v in fingerprint.items()}, input_bits=input_bits,
                   target=getattr(model, "target", None) or default_target())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": {"layers": {name: list(shape) for name, shape in self.fingerprint.items()}},
            "input_bits": self.input_bits,
            "target": self.target,
            "layers": {name: config.to_dict() for name, config in self.layers.items()},
            **({"weights": str(self.weights)} if isinstance(self.weights, Path) else {}),
            "metrics": dict(self.metrics),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<policy>") -> Policy:
        """Validate and build a policy; errors are :class:`PolicyError` naming ``source``."""
        def fail(key: str, problem: str) -> PolicyError:
            return PolicyError(f"{source}: {key}: {problem}")

        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: a policy file must be a YAML mapping, got {type(data).__name__}")
        for key in data:
            if key not in _TOP_KEYS:
                raise fail(str(key), f"unknown key (expected {', '.join(sorted(_TOP_KEYS))})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise fail("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}")
        fingerprint = _read_fingerprint(data.get("model"), fail)
        input_bits = data.get("input_bits", DEFAULT_INPUT_BITS)
        try:
            check_bits(input_bits)
        except ValueError as err:
            raise fail("input_bits", str(err)) from None
        target = data.get("target") or default_target()
        if target not in EXPORT_TARGETS:
            raise fail("target", f"must be one of {', '.join(EXPORT_TARGETS)}, got {target!r}")
        layers_data = data.get("layers")
        if not isinstance(layers_data, Mapping) or not layers_data:
            raise fail("layers", "must be a non-empty mapping of layer name to settings")
        layers = {}
        for name, settings in layers_data.items():
            if name not in fingerprint:
                raise fail(f"layers.{name}", "unknown layer: not in model.layers")
            layers[name] = _read_layer(f"layers.{name}", settings, fail)
        missing = [name for name in fingerprint if name not in layers]
        if missing:
            raise fail(f"layers.{missing[0]}", "missing layer: listed in model.layers but has no settings")
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
            raise fail("metrics", "must map metric names to numbers")
        provenance = data.get("provenance") or {}
        if not isinstance(provenance, Mapping):
            raise fail("provenance", "must be a mapping")
        weights = data.get("weights")
        if weights is not None and (not isinstance(weights, str) or not weights):
            raise fail("weights", f"must be the path of a weights file, got {weights!r}")
        if weights and (Path(weights).is_absolute() or ".." in Path(weights).parts):
            raise fail("weights", f"must name a file in the policy's own directory (or below), got {weights!r}")
        return cls(layers, fingerprint, {str(k): float(v) for k, v in metrics.items()}, dict(provenance), input_bits,
                   target, Path(weights) if weights else None)

    def check_model(self, model: ModelIdentity | Mapping[str, tuple[int, ...]], source: str = "<policy>") -> None:
        """Raise :class:`PolicyError` unless ``model`` has exactly this policy's layers and shapes."""
        theirs = dict(model.fingerprint()) if hasattr(model, "fingerprint") else dict(model)
        for name, shape in self.fingerprint.items():
            if name not in theirs:
                raise PolicyError(f"{source}: layers.{name}: policy of another model: the model has no such layer")
            if tuple(theirs[name]) != tuple(shape):
                raise PolicyError(f"{source}: layers.{name}: policy of another model: weight shape "
                                  f"{list(shape)} in the policy, {list(theirs[name])} in the model")
        extra = [name for name in theirs if name not in self.fingerprint]
        if extra:
            raise PolicyError(f"{source}: layers.{extra[0]}: policy of another model: "
                              "the model's layer is missing from the policy")


def _read_fingerprint(model: Any, fail: _Fail) -> Fingerprint:
    if not isinstance(model, Mapping) or not isinstance(model.get("layers"), Mapping) or not model["layers"]:
        raise fail("model.layers", "must map every layer name to its weight shape")
    fingerprint = {}
    for name, shape in model["layers"].items():
        if not isinstance(shape, list) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise fail(f"model.layers.{name}", f"weight shape must be a list of positive integers, got {shape!r}")
        fingerprint[str(name)] = tuple(shape)
    return fingerprint


def _read_layer(key: str, settings: Any, fail: _Fail) -> LayerQuantConfig:
    if not isinstance(settings, Mapping):
        raise fail(key, f"must be a mapping of settings, got {settings!r}")
    allowed = LayerQuantConfig.field_names()
    for name in settings:
        if name not in allowed:
            raise fail(f"{key}.{name}", f"unknown setting (expected {', '.join(allowed)})")
    for name in _REQUIRED_LAYER_KEYS:
        if name not in settings:
            raise fail(f"{key}.{name}", "missing")
    try:
        return LayerQuantConfig(**settings)
    except ValueError as err:
        field_name, _, problem = str(err).partition(": ")
        raise fail(f"{key}.{field_name}", problem) from None


def save_policy(policy: Policy, path: str | os.PathLike) -> Path:
    """Write ``policy`` as YAML (layers in network order) and return the path.

    Refined weights are written beside it (``policy.yaml`` -> ``policy.weights.pt``) when held in
    memory or kept outside its directory (copied): the file names its weights file relative to
    itself and within its own directory, so the two move together.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = policy.weights
    beside = path.with_name(path.stem + WEIGHTS_SUFFIX)
    if weights is not None and not isinstance(weights, Path):
        weights = beside
        torch.save({key: value.detach().cpu() for key, value in policy.weights.items()}, weights)
    elif weights is not None and not weights.resolve().is_relative_to(path.parent.resolve()):
        weights = Path(shutil.copyfile(weights, beside))
    if weights is not None:
        policy = replace(policy, weights=Path(os.path.relpath(weights.resolve(), path.parent.resolve())))
    path.write_text(yaml.safe_dump(policy.to_dict(), sort_keys=False, default_flow_style=None, width=200))
    return path


def load_policy(path: str | os.PathLike, model: Any = None) -> Policy:
    """Read and validate a policy file; with ``model`` (a module or a search space), also check
    that the policy was made for it."""
    source = str(path)
    data = read_yaml(path, PolicyError)
    policy = Policy.from_dict(data, source)
    if policy.weights is not None:
        policy.weights = Path(path).parent / policy.weights
        if not policy.weights.is_file():
            raise PolicyError(f"{source}: weights: no such file {policy.weights}")
    if model is not None:
        if not hasattr(model, "fingerprint"):
            model = layer_fingerprint(model)
        policy.check_model(model, source)
    return policy
