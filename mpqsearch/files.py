"""Reading user YAML files safely and writing files atomically.

Every file a user gives is read with :func:`read_yaml`: ``yaml.safe_load`` semantics, a key
written twice in one mapping refused (YAML would silently keep the last), and every problem one
line naming the file. Every file mpqsearch writes that another process may read meanwhile (trial
records, caches, the latency table) goes through :func:`write_atomic`: readers see the old
file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, error: type[Exception]) -> Any:
    """The YAML document in ``path``; unreadable files, bad YAML and repeated keys raise ``error``
    naming the file (and the line)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise error(f"{source}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{source}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, binary: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``. Creates the parent directory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
