"""Optuna's samplers by name, for the Optuna driver and the NNI multi-objective tuner alike.

Torch-free (the NNI tuner process imports it). A sampler's arguments come from the experiment
file; any the sampler refuses is a one-line :class:`~.config.ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from .config import Algorithm, ConfigError

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "NSGAII": optuna.samplers.NSGAIISampler,
    "NSGAIII": optuna.samplers.NSGAIIISampler,
    "TPE": optuna.samplers.TPESampler,
    "Random": optuna.samplers.RandomSampler,
    "GP": optuna.samplers.GPSampler,
}
TUNER_SAMPLERS = ("NSGAII", "NSGAIII", "TPE", "Random")
"""Those the NNI multi-objective tuner runs: GP imports torch, which can miss NNI's 10 seconds
for a tuner to connect."""


def make_sampler(algorithm: Algorithm, key: str = "sampler", source: str = "<config>",
                 worker: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler ``algorithm`` names, built with its args; a configured ``seed`` is offset by
    ``worker`` so that parallel workers do not repeat each other. ``key`` and ``source`` name
    where the algorithm was configured, for errors."""
    if algorithm.name not in SAMPLERS:
        raise ConfigError(f"{source}: {key}.name: unknown sampler {algorithm.name!r} "
                          f"(available: {', '.join(SAMPLERS)})")
    args: dict[str, Any] = dict(algorithm.args)
    if args.get("seed") is not None:
        if isinstance(args["seed"], bool) or not isinstance(args["seed"], int):
            raise ConfigError(f"{source}: {key}.args.seed: must be an integer, got {args['seed']!r}")
        args["seed"] += worker
    try:
        return SAMPLERS[algorithm.name](**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {key}.args: {algorithm.name}: {err}") from None
