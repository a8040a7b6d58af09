"""The JSON record every NNI trial process writes: its parameters, policy, metrics and strategy.

One file per trial under ``<run_dir>/trials/`` (``<trial job id>.json``), written atomically.
NNI's own database keeps only the reported metric; these records keep everything, and analysis
reads them without importing NNI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import write_atomic

TRIALS_DIR = "trials"


def write_trial_record(run_dir: Path, name: str, record: dict[str, Any]) -> None:
    """Write (or replace) trial ``name``'s record; readers never see half a file."""
    write_atomic(run_dir / TRIALS_DIR / f"{name}.json", lambda handle: json.dump(record, handle, indent=1))


def read_trial_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every readable record, by trial job id (the file name where a record lacks one)."""
    records = {}
    for file in sorted((run_dir / TRIALS_DIR).glob("*.json")):
        try:
            record = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being replaced; NNI's database still lists the trial
        records[record.get("trial") or file.stem] = record
    return records
