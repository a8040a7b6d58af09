"""Warm workers without NNI or torch: a fake worker (fake_worker.py) behind the real slots,
protocol, server, client and pool. Every test lists the processes left in its run directory."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mpqsearch.experiments.workers.client import request
from mpqsearch.experiments.workers.pool import WorkerPool
from mpqsearch.experiments.workers.processes import (
    ProcessRecord,
    find_processes,
    kill_and_wait,
    start_time,
    wait_gone,
)
from mpqsearch.experiments.workers.slots import SUN_PATH_MAX, Slots, iter_workers

FAKE = str(Path(__file__).with_name("fake_worker.py"))
COMMAND = [sys.executable, FAKE]


def _evaluate(slots, params, timeout=30.0, command=COMMAND, trial="t"):
    return request(slots, command, {"op": "evaluate", "trial": trial, "params": params}, timeout)


def _left(run_dir):
    return find_processes(str(run_dir))


@pytest.fixture
def slots(tmp_path):
    slots = Slots(tmp_path)
    yield slots
    for pid in _left(tmp_path):
        kill_and_wait(pid)
    assert _left(tmp_path) == []


def test_a_trial_starts_the_worker_it_needs_and_the_next_one_finds_it_warm(slots):
    first = _evaluate(slots, {"x": 1}, trial="a")
    second = _evaluate(slots, {"x": 2}, trial="b")
    assert first["ok"] and second["ok"]
    assert (first["final"], second["final"]) == ({"default": 1}, {"default": 2})
    assert first["pid"] == second["pid"] and _left(slots.run_dir) == [first["pid"]]


def test_sockets_are_private(slots):
    _evaluate(slots, {"x": 1})
    assert stat.S_IMODE(os.stat(slots.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(slots.socket_path(0)).st_mode) == 0o600


def test_a_worker_that_crashes_fails_only_its_trial_and_a_fresh_one_serves_the_next(slots):
    before = _evaluate(slots, {"x": 1})["pid"]
    crashed = _evaluate(slots, {"crash": True})
    assert not crashed["ok"] and crashed["worker_failed"]
    assert f"worker (pid {before}) exited while evaluating" in crashed["reason"]
    after = _evaluate(slots, {"x": 3})
    assert after["ok"] and after["pid"] != before and _left(slots.run_dir) == [after["pid"]]


def test_a_silent_worker_is_killed_after_the_timeout_and_replaced(slots):
    before = _evaluate(slots, {"x": 1})["pid"]
    silent = _evaluate(slots, {"sleep": 60}, timeout=1.0)
    assert not silent["ok"] and f"(pid {before}) gave no answer within 1 s and was killed" in silent["reason"]
    assert start_time(before) is None  # gone before the slot was released
    assert _evaluate(slots, {"x": 2})["ok"]


def test_an_evaluation_error_is_an_answer_and_the_worker_stays(slots):
    pid = _evaluate(slots, {"x": 1})["pid"]
    failed = _evaluate(slots, {"raise": True})
    assert not failed["ok"] and failed["reason"] == "ValueError: bad policy" and "worker_failed" not in failed
    assert _evaluate(slots, {"x": 1})["pid"] == pid


def test_a_worker_that_cannot_start_fails_the_trial_with_the_last_line_of_its_log(slots):
    failed = _evaluate(slots, {"x": 1}, command=[*COMMAND, "--fail-start"])
    assert not failed["ok"]
    assert failed["reason"].endswith("exited while starting: RuntimeError: cannot build the setup: no such workload")
    assert _left(slots.run_dir) == []


def test_concurrent_trials_take_one_slot_each(slots):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_evaluate(slots, {"sleep": 1.0}))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a["ok"] for a in answers) and len({a["pid"] for a in answers}) == 2
    assert sorted(index for index, _ in iter_workers(slots)) == [0, 1]


def test_the_pool_starts_workers_ahead_and_leaves_none_behind(slots):
    stray = _evaluate(slots, {"x": 1})["pid"]  # a previous launch's worker, listening on slot 0
    pool = WorkerPool(slots, COMMAND)
    pool.start(2)
    assert start_time(stray) is None
    first = _evaluate(slots, {"x": 1})
    assert first["ok"] and first["pid"] in [p.pid for p in pool.started]
    pool.close()
    assert _left(slots.run_dir) == []


def test_a_worker_exits_with_its_anchor(slots, tmp_path):
    anchor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = ProcessRecord.of(anchor.pid)
    pid = request(slots, COMMAND, {"op": "evaluate", "trial": "t", "params": {}}, 30, anchors=[record])["pid"]
    anchor.kill()
    anchor.wait()
    assert wait_gone(pid, 10) and _left(tmp_path) == []


def test_an_idle_worker_exits_and_the_next_trial_starts_another(tmp_path):
    slots = Slots(tmp_path)
    command = [sys.executable, "-c", textwrap.dedent(f"""
        import sys; sys.argv[0] = {FAKE!r}; sys.path.insert(0, {str(Path(FAKE).parent)!r})
        import fake_worker
        from mpqsearch.experiments.workers.server import run_worker
        run_worker([*sys.argv[1:], "--idle-exit", "0.5"], fake_worker.make_handler)
    """)]
    pid = _evaluate(slots, {"x": 1}, command=command)["pid"]
    assert wait_gone(pid, 10) and not slots.socket_path(0).exists()
    assert _evaluate(slots, {"x": 1}, command=command)["pid"] != pid
    for left in _left(tmp_path):
        kill_and_wait(left)


def test_a_cancelled_trial_kills_its_worker_and_ends_by_the_signal(slots):
    code = textwrap.dedent(f"""
        import sys
        from mpqsearch.experiments.workers.client import request
        from mpqsearch.experiments.workers.slots import Slots
        print(request(Slots({str(slots.run_dir)!r}), {COMMAND!r}, {{"op": "evaluate", "trial": "t",
              "params": {{"sleep": 60}}}}, 120), flush=True)
    """)
    trial = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not slots.socket_path(0).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    worker = [pid for pid in _left(slots.run_dir) if pid != trial.pid]
    trial.send_signal(signal.SIGINT)
    assert trial.wait(30) == -signal.SIGINT
    assert worker and all(start_time(pid) is None for pid in worker)


def test_a_run_directory_too_deep_for_a_socket_address_uses_a_private_short_one(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    slots = Slots(deep)
    assert len(os.fsencode(slots.socket_path(0))) <= SUN_PATH_MAX and slots.dir == deep.resolve() / "workers"
    assert stat.S_IMODE(os.stat(slots.socket_dir).st_mode) == 0o700
    try:
        assert _evaluate(slots, {"x": 5})["final"] == {"default": 5}
    finally:
        for pid in _left(deep):
            kill_and_wait(pid)


def test_a_worker_whose_anchor_ends_mid_request_answers_it_then_exits(slots, tmp_path):
    anchor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = ProcessRecord.of(anchor.pid)
    pid = request(slots, COMMAND, {"op": "evaluate", "trial": "t", "params": {}}, 30, anchors=[record])["pid"]
    answers = []
    arrived = tmp_path / "arrived"
    asking = threading.Thread(target=lambda: answers.append(_evaluate(slots, {"sleep": 2.0, "x": 7,
                                                                              "touch": str(arrived)})))
    asking.start()
    while not answers and not arrived.exists():
        time.sleep(0.01)
    anchor.kill()
    anchor.wait()
    asking.join()
    assert answers[0]["ok"] and answers[0]["final"] == {"default": 7} and answers[0]["pid"] == pid
    assert wait_gone(pid, 10) and _left(tmp_path) == []

