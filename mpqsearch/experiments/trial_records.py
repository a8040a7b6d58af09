"""The JSON record of every NNI trial: its parameters, policy, metrics and strategy.

One file per trial under ``<run_dir>/trials/`` (``<trial job id>.json``), written atomically by
whoever evaluated it (the trial's own process, or the warm worker that served it) or, when that
died first, by the trial with the reason. NNI's own database keeps only the reported metric;
these records keep everything, and analysis reads them without importing NNI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import write_atomic

TRIALS_DIR = "trials"
SEEDS_FILE = "seeds.json"
"""The seed policies' parameters and strategies, written by the launcher (``[{params, strategy}]``)."""


def strategy_of(run_dir: Path, params: dict[str, Any]) -> str:
    """The seed strategy whose policy ``params`` is, or ``tuner``."""
    seeds_file = run_dir / SEEDS_FILE
    if seeds_file.exists():
        for seed in json.loads(seeds_file.read_text()):
            if seed["params"] == params:
                return seed["strategy"]
    return "tuner"


def new_record(run_dir: Path, trial: str, sequence: int, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's record before its outcome is known (state ``FAILED`` until it succeeds)."""
    return {"trial": trial, "sequence": sequence, "params": params, "strategy": strategy_of(run_dir, params),
            "state": "FAILED"}


def record_failure(run_dir: Path, trial: str, sequence: int, params: dict[str, Any], reason: str) -> None:
    """Record trial ``trial`` as failed with ``reason``."""
    write_trial_record(run_dir, trial, {**new_record(run_dir, trial, sequence, params), "fail_reason": reason})


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
