"""How the command prints: tables for people, JSON for programs, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


class CliError(Exception):
    """A user mistake on the command line; printed as one line, exit status 2."""


def print_json(data: Any) -> None:
    """Every ``--json`` output: indented, keys as given."""
    print(json.dumps(data, indent=2))


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Rows as aligned columns (numbers right-aligned), headed by ``columns`` (default: the
    first row's keys)."""
    columns = list(columns or rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) if v.replace(".", "").replace("-", "").isdigit() else v.ljust(w)
                        for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> None:
    if rows:
        print(format_table(rows, columns))
