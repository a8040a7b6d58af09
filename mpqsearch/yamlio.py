"""Reading user YAML files safely, with one-line errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | os.PathLike, error: type[Exception]) -> Any:
    """``yaml.safe_load`` of a file; unreadable files and bad YAML raise ``error`` naming the file and line."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise error(f"{source}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{source}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None
