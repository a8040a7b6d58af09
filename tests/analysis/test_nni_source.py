"""NNI's database fills in what trial records cannot say: times, and trials that wrote none."""

import json
import sqlite3

from mpqsearch.analysis.nni_source import load_run
from mpqsearch.experiments.config import parse_config

SCHEMA = ("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text, "
          "sequenceId integer, message text, environmentId text)")


def test_records_and_database_events_merge_into_rows(tmp_path):
    db = tmp_path / "nni" / "abc" / "db" / "nni.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute(SCHEMA)
        params = json.dumps({"parameter_id": 0, "parameters": {"stem/w": 4}})
        conn.executemany("INSERT INTO TrialJobEvent (timestamp, trialJobId, event, data, sequenceId) "
                         "VALUES (?, ?, ?, ?, ?)", [
            (1_000_000, "AAAAA", "WAITING", params, 0), (1_001_000, "AAAAA", "RUNNING", params, 0),
            (1_004_500, "AAAAA", "FAILED", None, 0),
            (1_002_000, "BBBBB", "RUNNING", json.dumps({"parameters": {"stem/w": 8}}), 1),
        ])
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "AAAAA.json").write_text(json.dumps({
        "trial": "AAAAA", "sequence": 0, "params": {"stem/w": 4}, "strategy": "uniform", "state": "FAILED",
        "fail_reason": "MetricError: nan"}))
    (tmp_path / "trials" / ".CCCCC.tmp").write_text("{half a rec")  # being written: ignored
    results = load_run(tmp_path, "abc", parse_config({"workload": "example", "driver": "nni"}))
    failed, running = results.rows
    assert (failed.number, failed.state, failed.strategy, failed.fail_reason) == (
        0, "failed", "uniform", "MetricError: nan")
    assert failed.start == 1001.0 and failed.duration == 3.5
    assert (running.number, running.state, running.params, running.duration) == (1, "running", {"stem/w": 8}, None)
    assert running.metrics == {} and running.strategy is None
