"""The experiment file: one YAML file says what to search, how, and for how long.

Example (every key but ``workload`` is optional; the defaults are the model fields below)::

    name: espcn-mixed
    workload: sr-espcn-x2                # built-in name or module:function returning a Workload
    driver: optuna                       # or nni
    search_space:
      weight_bits: [2, 3, 4, 5, 6, 8]
      act_bits: [4, 6, 8]
      exclude: ["tail.*"]                # glob patterns of layers kept in float
      overrides: {"head.*": {weight_bits: [8]}}
      scale: product                     # quantizer settings of every policy
      granularity: per_channel
      weight_clipping: mse
      act_clipping: max
    objectives:                          # metric names: the workload's (psnr, top1, ...),
      - {metric: psnr, direction: maximize}   # size_ratio, size_bytes, bops, bops_ratio,
      - {metric: size_ratio, direction: minimize}  # latency_ms, and <metric>_drop
    constraints:
      - {metric: size_ratio, max: 0.25}
    tuner: {name: TPE, args: {}}         # nni: TPE, Evolution, Anneal, Random, GridSearch, MultiObjective
    sampler: {name: NSGAII, args: {seed: 0}}  # optuna: NSGAII, NSGAIII, TPE, Random, GP
    strategies:
      seed: [{name: gamma, args: {}}]
      prune: []
    budget: {max_trials: 40, max_duration: 2h, concurrency: 1, trial_timeout: 1h}
    nni_trials: warm                     # or cold: a new Python process per NNI trial (debugging)
    latency: {backend: lut, threads: 1, target: portable}  # target vnni: 8-bit weights for VNNI CPUs
    storage: null                        # optuna storage URL; default sqlite under the experiment dir
    port: 8080
    host: 127.0.0.1                      # where the NNI web UI listens
    directory: ~/mpqsearch-experiments   # results, caches and logs

The schema is declared once, as the pydantic models below (unknown keys refused, no type
coercion), with its defaults taken from the quantizer's own (:mod:`mpqsearch.quant.spec`).
Every mistake (unknown key, wrong type, bad value) is a :class:`ConfigError` whose one-line
message names the file and the dotted key; command-line overrides are checked as flags
(:func:`apply_overrides`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StrictStr, ValidationError

from ..files import read_yaml
from ..objectives import Constraint, Objective
from ..quant.spec import (
    CLIPPINGS,
    DEFAULT_ACT_BITS,
    DEFAULT_WEIGHT_BITS,
    EXPORT_TARGETS,
    GRANULARITIES,
    SCALE_KINDS,
    LayerQuantConfig,
    check_bits,
)
from ..validation import describe_error
from ..workloads.image_folder_spec import ImageFolderSpec
from .drivers import DRIVERS

MAX_TRIALS_LIMIT = 1_000_000
"""A budget beyond this is a typo (NNI keeps trial counts in 32-bit integers)."""
_BASE = LayerQuantConfig()


class ConfigError(ValueError):
    """An invalid experiment file or flag; the message names the file (or flag) and the key."""


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``"90"``, ``"30m"``, ``"2h"`` or ``"1d"``."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", str(text))
    if not match or isinstance(text, bool):
        raise ValueError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# --- value types: each check says what it wanted and what it got -------------------------------
def _bits(value: Any) -> int:
    check_bits(value)
    return value


def _bit_list(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of bit widths, got {value!r}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _duration(value: Any) -> str | None:
    if value is None:
        return None
    parse_duration(value)
    return str(value)


def _named(value: Any) -> Any:
    """``NSGAII`` is short for ``{name: NSGAII}``."""
    return {"name": value} if isinstance(value, str) else value


Bits = Annotated[int, BeforeValidator(_bits)]
BitList = Annotated[list[Bits], BeforeValidator(_bit_list)]
PositiveInt = Annotated[int, BeforeValidator(_positive_int)]


class _Section(BaseModel):
    """Unknown keys refused; every field's type is strict itself (no ``"8"`` for 8), so the entries
    of ``objectives`` and ``constraints`` may be mappings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SearchSpaceConfig(_Section):
    """What every layer may choose, and the quantizer settings of every policy."""

    weight_bits: BitList = list(DEFAULT_WEIGHT_BITS)
    act_bits: BitList = list(DEFAULT_ACT_BITS)
    include: list[StrictStr] | None = None
    exclude: list[StrictStr] = []
    overrides: dict[StrictStr, dict[Literal["weight_bits", "act_bits"], BitList]] = {}
    scale: Literal[SCALE_KINDS] = _BASE.scale
    granularity: Literal[GRANULARITIES] = _BASE.granularity
    weight_clipping: Literal[CLIPPINGS] = _BASE.weight_clipping
    act_clipping: Literal[CLIPPINGS] = _BASE.act_clipping

    def base(self) -> LayerQuantConfig:
        """The non-bit settings as a layer config (bits are the space's to choose)."""
        return LayerQuantConfig(scale=self.scale, granularity=self.granularity,
                                weight_clipping=self.weight_clipping, act_clipping=self.act_clipping)


class Algorithm(_Section):
    """A tuner, sampler or strategy by name, with its keyword arguments."""

    name: StrictStr
    args: dict[StrictStr, Any] = {}


Named = Annotated[Algorithm, BeforeValidator(_named)]


class Strategies(_Section):
    seed: list[Named] = []
    prune: list[Named] = []


class Budget(_Section):
    max_trials: PositiveInt = Field(20, le=MAX_TRIALS_LIMIT)
    max_duration: Annotated[str | None, BeforeValidator(_duration)] = None
    """``"30m"``, ``"2h"``, ``"1d"`` or seconds."""
    concurrency: PositiveInt = 1
    trial_timeout: Annotated[str, BeforeValidator(_duration)] = "1h"
    """A warm NNI trial whose worker gives no answer within it fails (the worker is killed)."""

    @property
    def max_seconds(self) -> float | None:
        return None if self.max_duration is None else parse_duration(self.max_duration)

    @property
    def trial_timeout_seconds(self) -> float:
        return parse_duration(self.trial_timeout)


class LatencyConfig(_Section):
    backend: StrictStr = "onnxruntime"
    threads: PositiveInt = 1
    target: Literal[EXPORT_TARGETS] | None = None
    """The CPUs the policies are quantized, timed and exported for (``portable``, ``vnni``);
    default: this machine's (:func:`~mpqsearch.quant.spec.default_target`), fixed at launch."""


class ExperimentConfig(_Section):
    """One experiment file; ``source`` is the file it was read from (for messages)."""

    workload: StrictStr | ImageFolderSpec
    """A built-in name, ``module:function`` returning a Workload, or an image-folder workload's
    mapping (:class:`~mpqsearch.workloads.image_folder_spec.ImageFolderSpec`)."""
    name: StrictStr | None = None
    driver: Literal[DRIVERS] = "optuna"
    search_space: SearchSpaceConfig = SearchSpaceConfig()
    objectives: list[Objective] = []
    constraints: list[Constraint] = []
    tuner: Named = Algorithm(name="MultiObjective")
    sampler: Named = Algorithm(name="NSGAII")
    strategies: Strategies = Strategies()
    budget: Budget = Budget()
    nni_trials: Literal["warm", "cold"] = "warm"
    """NNI trials handed to warm workers, or each evaluated in its own new process."""
    latency: LatencyConfig = LatencyConfig()
    storage: StrictStr | None = None
    port: PositiveInt = Field(8080, le=65535)
    host: StrictStr = "127.0.0.1"
    directory: StrictStr = "~/mpqsearch-experiments"
    source: str = Field("<config>", exclude=True)
    _flags: dict[str, str] = PrivateAttr(default_factory=dict)

    def where(self, key: str) -> str:
        """How to name ``key`` in a message: the flag that set it (``--directory``), or the file
        and the key (``exp.yaml: directory``)."""
        return self._flags.get(key) or f"{self.source}: {key}"

    @property
    def workload_spec(self) -> str | dict[str, Any]:
        """The workload as plain data (a name, or an image-folder workload's mapping) for records."""
        return self.workload if isinstance(self.workload, str) else self.workload.model_dump()

    @property
    def experiment_dir(self) -> Path:
        return Path(os.path.expanduser(self.directory))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, mappings, numbers, strings) that :func:`parse_config` reads back."""
        return self.model_dump(mode="json")


def redact_url(url: str) -> str:
    """A storage URL with its password masked (``postgresql://user:***@host/db``), for printing
    and saving: passwords are never shown or written in clear. Anything else is returned as is."""
    if "://" not in url:
        return url
    import sqlalchemy  # on use: the command line starts without it

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


# --- errors as one line naming the key ----------------------------------------------------------
def config_error(err: ValidationError, source: str, flags: Mapping[str, str] | None = None) -> ConfigError:
    """The first error of ``err`` as one line: ``source: key: problem``, or ``--flag: problem``
    where the key was set by a flag named in ``flags`` (key -> flag)."""
    error = err.errors()[0]
    loc, (key, problem) = error["loc"], describe_error(error)
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is not None:
            problem += f" (expected one of {', '.join(_fields(model))})"
    if key == "workload" and problem == "missing":
        problem += " (a built-in workload name or module:function)"
    if flags and key in flags:
        return ConfigError(f"{flags[key]}: {problem}")
    return ConfigError(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _schema_fields(model: Any) -> dict[str, Any]:
    return getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", None) or {}


def _fields(model: Any) -> list[str]:
    """The file keys of a schema model (``source`` is not one)."""
    return [name for name, field in _schema_fields(model).items() if not field.exclude]


def _model_at(loc: tuple[Any, ...]) -> Any:
    """The schema model at ``loc`` (a path of keys and list indices), or ``None`` if it is no model."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = _schema_fields(model)
        if part not in fields:
            return None
        model = next((t for t in _inner(fields[part].annotation) if _fields(t)), None)
        if model is None:
            return None
    return model


def _inner(annotation: Any) -> list[Any]:
    """``annotation`` and the types inside it (``list[X]``, ``X | None``, ``Annotated[X, ...]``)."""
    found, stack = [], [annotation]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(getattr(current, "__args__", ()) or ())
        if getattr(current, "__metadata__", None) is not None:
            stack.append(current.__origin__)
    return found


def parse_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a loaded experiment mapping; see the module docstring for the schema."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: an experiment file must be a YAML mapping")
    try:
        config = ExperimentConfig.model_validate({**data, "source": source})
    except ValidationError as err:
        raise config_error(err, source) from None
    if isinstance(config.workload, ImageFolderSpec):  # paths are the file's: the run keeps a copy elsewhere
        config.workload = config.workload.resolved(Path(source).parent)
    return config


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment file (``yaml.safe_load`` only)."""
    return parse_config(read_yaml(path, ConfigError), str(path))
