"""Reading an NNI experiment into :class:`Results` rows, from files only (no NNI import).

Each trial process writes its full record under ``<run_dir>/trials/`` (see
:mod:`mpqsearch.experiments.drivers.nni_trial`); NNI's own database adds what only the manager knows:
start and end times, and trials that never wrote a record (waiting, running, killed).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..experiments.config import ExperimentConfig
from ..experiments.trial_records import read_trial_records
from ..objectives import feasible, metric_directions
from .table import Results, TrialRow

_STATES = {"SUCCEEDED": "complete", "FAILED": "failed", "RUNNING": "running", "WAITING": "waiting",
           "UNKNOWN": "waiting", "EARLY_STOPPED": "pruned", "USER_CANCELED": "cancelled", "SYS_CANCELED": "cancelled"}


def _events(run_dir: Path, experiment_id: str) -> dict[str, dict[str, Any]]:
    """Per trial job: sequence, parameters, last state, start and end times (from NNI's database)."""
    db = run_dir / "nni" / experiment_id / "db" / "nni.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        events = conn.execute("SELECT timestamp, trialJobId, event, data, sequenceId FROM TrialJobEvent "
                              "ORDER BY timestamp").fetchall()
    jobs: dict[str, dict[str, Any]] = {}
    for timestamp, job, event, data, sequence in events:
        info = jobs.setdefault(job, {"sequence": sequence, "params": {}, "state": event, "start": None, "end": None})
        info["state"] = event
        if data:
            try:
                info["params"] = json.loads(data).get("parameters", info["params"])
            except (json.JSONDecodeError, AttributeError):
                pass
        if event == "RUNNING":
            info["start"] = timestamp / 1000
        elif event not in ("WAITING", "UNKNOWN"):
            info["end"] = timestamp / 1000
    return jobs


def load_run(run_dir: Path, experiment_id: str, config: ExperimentConfig) -> Results:
    """Every trial of the NNI experiment in ``run_dir``, in sequence order."""
    records, jobs = read_trial_records(run_dir), _events(run_dir, experiment_id)
    rows = []
    for job in sorted(set(records) | set(jobs)):
        record, info = records.get(job, {}), jobs.get(job, {})
        start, end = info.get("start"), info.get("end")
        rows.append(TrialRow(
            number=int(record.get("sequence", info.get("sequence", -1))), trial_id=job,
            state=_STATES.get(record.get("state") or info.get("state"), "waiting"),
            params=record.get("params") or info.get("params") or {}, metrics=record.get("metrics", {}),
            strategy=record.get("strategy"), start=start,
            duration=end - start if start is not None and end is not None else None,
            fail_reason=record.get("fail_reason"), feasible=feasible(record.get("violations")),
        ))
    rows.sort(key=lambda row: row.number)
    metrics = {m for row in rows for m in row.metrics}
    return Results(experiment_id, "nni", str(config.workload), rows, list(config.objectives),
                   metric_directions(config.objectives, {}, metrics), config)
