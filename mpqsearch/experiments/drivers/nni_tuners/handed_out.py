"""What a tuner has handed out, kept in a file so that a resumed tuner does not hand it out again.

NNI rebuilds the tuner from scratch when an experiment resumes (same class, same arguments), then
sends it only the *finished* trials (``import_data``); trials that were running when the manager
stopped are rerun by NNI with their old parameters, which the new tuner never sees. A tuner that
appends each parameter set it hands out to this file knows both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """NumPy scalars (NNI's built-in tuners hand some out) as Python numbers."""
    return value.item() if hasattr(value, "item") else str(value)


def params_key(params: dict[str, Any]) -> str:
    """One policy's parameters as a comparable text."""
    return json.dumps(params, sort_keys=True, default=_plain)


class HandedOut:
    """Parameter sets handed out so far, read from (and appended to) ``path``; in memory only
    when ``path`` is ``None``. A line cut short by a crash is ignored."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.keys: set[str] = set()
        self.count = 0
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    self.keys.add(params_key(json.loads(line)))
                except ValueError:
                    continue
                self.count += 1

    def __contains__(self, params: dict[str, Any]) -> bool:
        return params_key(params) in self.keys

    def add(self, params: dict[str, Any]) -> None:
        self.keys.add(params_key(params))
        self.count += 1
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(params_key(params) + "\n")
