"""An on-disk cache of what trials share, so that a new trial process does not redo it.

NNI runs every trial as a new process, and Optuna workers are separate processes too. What does
not depend on the policy (FP32 metrics, calibration statistics, per-layer weight scales) is
stored under one directory per (workload, model weights, data) fingerprint; writes are atomic
(a temporary file renamed into place), so concurrent trials never read half a file.

The fingerprint also holds :data:`CACHE_FORMAT`: a change to what the entries contain (new
statistics, a new layout) bumps it, so a cache written by an older mpqsearch is not read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import write_atomic


def _update_hash(digest: hashlib._Hash, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(str((value.dtype, tuple(value.shape))).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _update_hash(digest, item)
    elif isinstance(value, dict):
        for key in sorted(value):
            digest.update(str(key).encode())
            _update_hash(digest, value[key])
    else:
        digest.update(repr(value).encode())


CACHE_FORMAT = 3
"""Version of the cached entries' contents (2: statistics of model inputs and of add/concat outputs;
3: folded batch norms, quantizers before activations and on every tensor a layer reads)."""


def fingerprint(model: nn.Module, *data: Iterable[Any]) -> str:
    """A short hash of the model's weights, the given data and :data:`CACHE_FORMAT`; changes
    when any of them changes."""
    digest = hashlib.sha256(f"mpqsearch-cache-{CACHE_FORMAT}".encode())
    _update_hash(digest, dict(model.state_dict()))
    for items in data:
        _update_hash(digest, list(items))
    return digest.hexdigest()[:16]


class TrialCache:
    """Files under ``directory/key`` (created with the first entry): ``load`` returns ``None``
    for a missing entry."""

    def __init__(self, directory: str | os.PathLike, key: str) -> None:
        self.path = Path(directory) / key

    def load(self, name: str) -> Any:
        file = self.path / f"{name}.pt"
        if not file.exists():
            return None
        return torch.load(file, weights_only=True)

    def save(self, name: str, value: Any) -> None:
        write_atomic(self.path / f"{name}.pt", lambda handle: torch.save(value, handle), binary=True)
