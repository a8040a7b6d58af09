"""The experiment file: one YAML file says what to search, how, and for how long.

Example (every key but ``workload`` is optional)::

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
    budget: {max_trials: 40, max_duration: 2h, concurrency: 1}
    latency: {backend: lut, threads: 1, target: portable}  # target vnni: 8-bit weights for VNNI CPUs
    storage: null                        # optuna storage URL; default sqlite under the experiment dir
    port: 8080
    host: 127.0.0.1                      # where the NNI web UI listens
    directory: ~/mpqsearch-experiments   # results, caches and logs

Every mistake (unknown key, wrong type, bad value) is a :class:`ConfigError` whose one-line
message names the file and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..quant.spec import CLIPPINGS, EXPORT_TARGETS, GRANULARITIES, SCALE_KINDS, check_bits
from ..yamlio import read_yaml
from ..objectives import DIRECTIONS, Constraint, Objective

DRIVERS = ("nni", "optuna")


class ConfigError(ValueError):
    """An invalid experiment file; the message names the file and the key."""


@dataclass
class SearchSpaceConfig:
    weight_bits: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6, 7, 8])
    act_bits: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])
    include: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    scale: str = "product"
    granularity: str = "per_channel"
    weight_clipping: str = "mse"
    act_clipping: str = "max"


@dataclass
class Algorithm:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyRef:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Strategies:
    seed: list[StrategyRef] = field(default_factory=list)
    prune: list[StrategyRef] = field(default_factory=list)


@dataclass
class Budget:
    max_trials: int = 20
    max_duration: str | None = None  # "30m", "2h", "1d" or seconds
    concurrency: int = 1

    @property
    def max_seconds(self) -> float | None:
        return None if self.max_duration is None else parse_duration(self.max_duration)


@dataclass
class LatencyConfig:
    backend: str = "onnxruntime"
    threads: int = 1
    target: str = "portable"


@dataclass
class ExperimentConfig:
    workload: str
    name: str | None = None
    driver: str = "optuna"
    search_space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    objectives: list[Objective] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    tuner: Algorithm = field(default_factory=lambda: Algorithm("MultiObjective"))
    sampler: Algorithm = field(default_factory=lambda: Algorithm("NSGAII"))
    strategies: Strategies = field(default_factory=Strategies)
    budget: Budget = field(default_factory=Budget)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    storage: str | None = None
    port: int = 8080
    host: str = "127.0.0.1"
    directory: str = "~/mpqsearch-experiments"
    source: str = "<config>"

    @property
    def experiment_dir(self) -> Path:
        return Path(os.path.expanduser(self.directory))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data.pop("source")
        return data


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``"90"``, ``"30m"``, ``"2h"`` or ``"1d"``."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class _Reader:
    """Reads one mapping with type checks; every error names the file and the dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    def mapping(self, key: str, value: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        for name in value:
            if name not in allowed:
                raise self.fail(f"{key}.{name}" if key else str(name),
                                f"unknown key (expected one of {', '.join(allowed)})")
        return value

    def typed(self, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"must be {what}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {what}, got {value!r}")
        return value

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def bits(self, key: str, value: Any) -> list[int]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty list of bit widths, got {value!r}")
        for i, b in enumerate(value):
            try:
                check_bits(b)
            except ValueError as err:
                raise self.fail(f"{key}[{i}]", str(err)) from None
        return list(value)

    def strings(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, got {value!r}")
        return list(value)

    def positive_int(self, key: str, value: Any) -> int:
        self.typed(key, value, int, "a positive integer")
        if value <= 0:
            raise self.fail(key, f"must be a positive integer, got {value}")
        return value


def _search_space(r: _Reader, data: Any) -> SearchSpaceConfig:
    keys = tuple(SearchSpaceConfig.__dataclass_fields__)
    data = r.mapping("search_space", data, keys)
    config = SearchSpaceConfig()
    for name in ("weight_bits", "act_bits"):
        if name in data:
            setattr(config, name, r.bits(f"search_space.{name}", data[name]))
    if data.get("include") is not None:
        config.include = r.strings("search_space.include", data["include"])
    if "exclude" in data:
        config.exclude = r.strings("search_space.exclude", data["exclude"])
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise r.fail("search_space.overrides", "must map layer patterns to {weight_bits, act_bits}")
    for pattern, settings in overrides.items():
        key = f"search_space.overrides.{pattern}"
        settings = r.mapping(key, settings, ("weight_bits", "act_bits"))
        config.overrides[str(pattern)] = {k: r.bits(f"{key}.{k}", v) for k, v in settings.items()}
    for name, allowed in (("scale", SCALE_KINDS), ("granularity", GRANULARITIES),
                          ("weight_clipping", CLIPPINGS), ("act_clipping", CLIPPINGS)):
        if name in data:
            setattr(config, name, r.choice(f"search_space.{name}", data[name], allowed))
    return config


def _algorithm(r: _Reader, key: str, data: Any, default: Algorithm) -> Algorithm:
    if data is None:
        return default
    if isinstance(data, str):
        return Algorithm(data)
    data = r.mapping(key, data, ("name", "args"))
    name = r.typed(f"{key}.name", data.get("name"), str, "a name")
    args = data.get("args") or {}
    r.typed(f"{key}.args", args, Mapping, "a mapping")
    return Algorithm(name, dict(args))


def _strategies(r: _Reader, data: Any) -> Strategies:
    data = r.mapping("strategies", data, ("seed", "prune"))
    result = Strategies()
    for phase in ("seed", "prune"):
        items = data.get(phase) or []
        if not isinstance(items, list):
            raise r.fail(f"strategies.{phase}", "must be a list of strategies")
        for i, item in enumerate(items):
            algo = _algorithm(r, f"strategies.{phase}[{i}]", item, Algorithm(""))
            getattr(result, phase).append(StrategyRef(algo.name, algo.args))
    return result


def parse_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a loaded experiment mapping; see the module docstring for the schema."""
    r = _Reader(source)
    top = tuple(k for k in ExperimentConfig.__dataclass_fields__ if k != "source")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: an experiment file must be a YAML mapping")
    data = r.mapping("", data, top)
    if "workload" not in data:
        raise r.fail("workload", "missing (a built-in workload name or module:function)")
    config = ExperimentConfig(workload=r.typed("workload", data["workload"], str, "a workload name"), source=source)
    if data.get("name") is not None:
        config.name = r.typed("name", data["name"], str, "a string")
    if "driver" in data:
        config.driver = r.choice("driver", data["driver"], DRIVERS)
    config.search_space = _search_space(r, data.get("search_space"))
    for i, item in enumerate(data.get("objectives") or []):
        item = r.mapping(f"objectives[{i}]", item, ("metric", "direction"))
        metric = r.typed(f"objectives[{i}].metric", item.get("metric"), str, "a metric name")
        config.objectives.append(Objective(metric, r.choice(f"objectives[{i}].direction", item.get("direction"), DIRECTIONS)))
    for i, item in enumerate(data.get("constraints") or []):
        item = r.mapping(f"constraints[{i}]", item, ("metric", "max", "min"))
        metric = r.typed(f"constraints[{i}].metric", item.get("metric"), str, "a metric name")
        bounds = {k: r.typed(f"constraints[{i}].{k}", item[k], (int, float), "a number") for k in ("max", "min") if item.get(k) is not None}
        if not bounds:
            raise r.fail(f"constraints[{i}]", "needs max or min")
        config.constraints.append(Constraint(metric, **{k: float(v) for k, v in bounds.items()}))
    config.tuner = _algorithm(r, "tuner", data.get("tuner"), config.tuner)
    config.sampler = _algorithm(r, "sampler", data.get("sampler"), config.sampler)
    config.strategies = _strategies(r, data.get("strategies"))
    budget = r.mapping("budget", data.get("budget"), ("max_trials", "max_duration", "concurrency"))
    if "max_trials" in budget:
        config.budget.max_trials = r.positive_int("budget.max_trials", budget["max_trials"])
    if "concurrency" in budget:
        config.budget.concurrency = r.positive_int("budget.concurrency", budget["concurrency"])
    if budget.get("max_duration") is not None:
        try:
            parse_duration(budget["max_duration"])
        except ValueError as err:
            raise r.fail("budget.max_duration", str(err)) from None
        config.budget.max_duration = str(budget["max_duration"])
    latency = r.mapping("latency", data.get("latency"), ("backend", "threads", "target"))
    if "backend" in latency:
        config.latency.backend = r.typed("latency.backend", latency["backend"], str, "a backend name")
    if "threads" in latency:
        config.latency.threads = r.positive_int("latency.threads", latency["threads"])
    if "target" in latency:
        config.latency.target = r.choice("latency.target", latency["target"], EXPORT_TARGETS)
    if data.get("storage") is not None:
        config.storage = r.typed("storage", data["storage"], str, "a storage URL or file")
    if "port" in data:
        port = r.positive_int("port", data["port"])
        if port > 65535:
            raise r.fail("port", f"must be at most 65535, got {port}")
        config.port = port
    if "host" in data:
        config.host = r.typed("host", data["host"], str, "an address")
    if "directory" in data:
        config.directory = r.typed("directory", data["directory"], str, "a path")
    return config


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment file (``yaml.safe_load`` only)."""
    return parse_config(read_yaml(path, ConfigError), str(path))
