"""No repeated policies, a random stream per trial, and seeds inside NSGA-II's population.

- :class:`DistinctSampler` wraps any Optuna sampler so that no trial repeats a policy the study
  already holds (complete, running, queued or failed), and reseeds the inner sampler's random
  states from (seed, trial number) before every trial.
- :class:`SeededNSGAIISampler` is NSGA-II whose enqueued (fixed) trials get a generation like
  its own, so seed policies enter its population.

Why the per-trial reseed: a sampler rebuilt with the same seed (``mpqsearch resume``, NNI
rebuilding its tuner) replays its random stream from the start, so a resumed search repeated its
first trials. Reseeding every trial from (seed, trial number) makes every proposal a function of
the seed, the trial number and the history alone: a resumed study continues exactly as an
uninterrupted one, parallel workers differ (their trial numbers differ), and the Optuna driver and
the NNI multi-objective tuner propose the same sequence. No state is kept outside the study.

Torch-free (the NNI tuner process imports it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, NSGAIISampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

SEEN_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL, TrialState.PRUNED)
"""A policy in a trial of any of these states is not proposed again."""
REPEAT_ATTR = "repeat_of"
"""User attribute of a trial answered from an earlier trial's record (its number)."""


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters, or the fixed ones of a queued (enqueued) trial."""
    return trial.params if trial.params else dict(trial.system_attrs.get("fixed_params", {}))


def policy_key(params: Mapping[str, Any], names: Sequence[str]) -> tuple | None:
    """The policy of ``params`` as a tuple in ``names``' order; ``None`` if one is missing."""
    if not all(n in params for n in names):
        return None
    return tuple(params[n] for n in names)


def seen_policies(study: Study, names: Sequence[str], exclude: int | None = None) -> set[tuple]:
    """Every policy the study holds in a trial (but trial number ``exclude``)."""
    keys = set()
    for t in study._get_trials(deepcopy=False, states=SEEN_STATES, use_cache=False):
        if t.number != exclude:
            key = policy_key(trial_params(t), names)
            if key is not None:
                keys.add(key)
    return keys


def recorded_trial(study: Study, number: int, params: Mapping[str, Any]) -> FrozenTrial | None:
    """The first complete trial but ``number`` (and not itself answered from a record) that
    evaluated ``params``: a repeated policy is answered from its record instead of evaluated."""
    for other in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=False):
        if other.number != number and other.params == dict(params) and REPEAT_ATTR not in other.user_attrs:
            return other
    return None


RECORD_ATTRS = ("metrics", "timings", "latency")
"""User attributes a trial answered from a record takes from it (what a report shows)."""


def answer_from_record(trial: Any, recorded: FrozenTrial) -> list[float]:
    """Make ``trial`` (an ``optuna.Trial`` being run) a copy of ``recorded``'s result: marked
    :data:`REPEAT_ATTR`, with its recorded attributes and constraints; returns its values, for
    the objective to return or the tuner to tell."""
    trial.set_user_attr(REPEAT_ATTR, recorded.number)
    for key in RECORD_ATTRS:
        if key in recorded.user_attrs:
            trial.set_user_attr(key, recorded.user_attrs[key])
    for name, violation in (recorded.constraints or {}).items():
        trial.set_constraint(name, violation)
    return list(recorded.values)


def derived_seed(seed: int, number: int, salt: str = "") -> int:
    """A 32-bit seed from the experiment seed, the trial number and a salt (stable across
    processes and Python versions, unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{number}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def reseed_sampler(sampler: Any, seed: int, number: int) -> int:
    """Reseed every ``LazyRandomState`` reachable from ``sampler``'s attributes (its own, its
    random fallback's, NSGA-II's child-generation strategy's) from (seed, trial number, attribute
    path); returns how many were reseeded."""
    visited: set[int] = set()
    count = 0

    def walk(obj: Any, path: str, depth: int) -> None:
        nonlocal count
        if depth > 3 or id(obj) in visited:
            return
        visited.add(id(obj))
        if isinstance(obj, LazyRandomState):
            obj.rng.seed(derived_seed(seed, number, path))
            count += 1
            return
        for name, value in sorted((getattr(obj, "__dict__", None) or {}).items()):
            if isinstance(value, (LazyRandomState, BaseSampler)) or hasattr(value, "_rng"):
                walk(value, f"{path}.{name}", depth + 1)

    walk(sampler, "", 0)
    return count


class DistinctSampler(BaseSampler):
    """Wraps ``inner`` so that no trial repeats a policy the study holds: the inner sampler's whole
    proposal is drawn in ``sample_relative`` (its relative sample completed by its
    ``sample_independent`` in the space's order, what the trial would ask) and drawn again while it
    repeats one; after ``max_redraws`` redraws, a uniformly random unseen policy.

    ``search_space``: the distributions in the objective's order (needed so that even the first
    trial is proposed whole). ``seed``: when given, every trial reseeds the inner sampler from
    (seed, trial number) (see the module docstring). Each redraw is a full ``sample_relative``:
    give a costly inner sampler (GP) a small ``max_redraws``.
    """

    def __init__(self, inner: BaseSampler, search_space: Mapping[str, BaseDistribution],
                 seed: int | None = None, max_redraws: int = 32) -> None:
        self.inner = inner
        self.space = dict(search_space)
        self.names = list(self.space)
        self.seed = seed
        self.max_redraws = max_redraws
        self._rng = LazyRandomState(seed)
        self.redraws = 0
        self.fallbacks = 0

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng.rng.seed()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.space)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self.seed is not None:
            reseed_sampler(self.inner, self.seed, trial.number)
            self._rng.rng.seed(derived_seed(self.seed, trial.number, "distinct"))
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def _draw(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        inner_space = {n: d for n, d in self.inner.infer_relative_search_space(study, trial).items()
                       if n in self.space}
        params = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
        for name in self.names:
            if name not in params:
                params[name] = self.inner.sample_independent(study, trial, name, self.space[name])
        return {n: params[n] for n in self.names}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not self.space or "fixed_params" in trial.system_attrs:
            return {}
        seen = seen_policies(study, self.names, exclude=trial.number)
        params = self._draw(study, trial)
        for _ in range(self.max_redraws):
            if policy_key(params, self.names) not in seen:
                return params
            self.redraws += 1
            params = self._draw(study, trial)
        if policy_key(params, self.names) not in seen:
            return params
        self.fallbacks += 1
        return self.random_unseen(seen) or params

    def random_unseen(self, seen: set[tuple]) -> dict[str, Any] | None:
        """A uniformly random policy not in ``seen``; ``None`` when every policy was seen."""
        rng = self._rng.rng
        choices = [list(getattr(self.space[n], "choices", ())) for n in self.names]
        if not all(choices) or len(seen) >= int(np.prod([len(c) for c in choices])):
            return None
        for _ in range(2000):
            key = tuple(c[rng.randint(len(c))] for c in choices)
            if key not in seen:
                return dict(zip(self.names, key, strict=False))
        return None


class SeededNSGAIISampler(NSGAIISampler):
    """NSGA-II whose enqueued (fixed) trials get a generation like its own trials, so seed policies
    fill generation 0 before any random individual and become parents of the first children.

    Optuna gives a trial its generation only in ``sample_relative``, which a trial whose every
    parameter is fixed never calls: queued seeds had no generation and never entered the
    population (a seeded run equalled the unseeded run shifted by the number of seeds). The
    generation keys stay NSGA-II's, so studies made with the plain sampler read the same.
    """

    _GENERATION_KEY = NSGAIISampler._GENERATION_KEY
    _PARENT_CACHE_KEY_PREFIX = NSGAIISampler._PARENT_CACHE_KEY_PREFIX

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            self.get_trial_generation(study, trial)


SeededNSGAIISampler._GENERATION_KEY = NSGAIISampler._GENERATION_KEY  # __init_subclass__ renamed them
SeededNSGAIISampler._PARENT_CACHE_KEY_PREFIX = NSGAIISampler._PARENT_CACHE_KEY_PREFIX
