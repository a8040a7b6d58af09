"""NNI's warm trial command: ``python -m mpqsearch.experiments.drivers.nni_client [--timeout SECONDS] RUN_DIR``.

A thin client that imports neither torch nor ``nni`` (it starts in a few hundredths of a second,
where the cold trial :mod:`.nni_trial` takes seconds): it gets the parameters from NNI's trial
channel (:mod:`.nni_channel`), hands them to its slot's warm worker (:mod:`.nni_worker`, through
:mod:`mpqsearch.experiments.workers.client`), waits, and reports the worker's metrics to NNI,
intermediate and final, as the cold trial does; the worker writes the same trial record.

- No worker in its slot (``nnictl create`` with no launcher, or the slot's worker crashed): the
  trial starts one, anchored to NNI's manager (it exits when the manager does); later trials on
  that slot find it warm. A worker that cannot start fails the trial with the last line of its log.
- A worker that dies mid-trial, or stays silent for ``--timeout`` seconds (killed then), fails
  only this trial, recorded with the reason; the next trial on the slot starts a fresh worker.
- No HTTP trial channel (NNI's remote or reuse modes): the trial runs cold, in its own process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..workers.client import request
from ..workers.processes import ProcessRecord, command_line, parent_of
from ..workers.slots import Slots, python_module_command
from .nni_channel import NniTrialChannel

WORKER_MODULE = "mpqsearch.experiments.drivers.nni_worker"
CLIENT_MODULE = "mpqsearch.experiments.drivers.nni_client"
COLD_MODULE = "mpqsearch.experiments.drivers.nni_trial"
DEFAULT_TIMEOUT = 3600.0


def worker_command(run_dir: Path) -> list[str]:
    return python_module_command(WORKER_MODULE, str(run_dir))


def cold_command(run_dir: Path) -> list[str]:
    from ..runs import EXPERIMENT_FILE

    return python_module_command(COLD_MODULE, str(run_dir / EXPERIMENT_FILE), str(run_dir))


def trial_command(run_dir: Path, warm: bool = True, timeout: float | None = None) -> str:
    """NNI's ``trialCommand`` (run by ``/bin/bash``: every argument quoted)."""
    if not warm:
        return shlex.join(cold_command(run_dir))
    return shlex.join(python_module_command(CLIENT_MODULE, "--timeout", f"{timeout or DEFAULT_TIMEOUT:g}",
                                            str(run_dir)))


def nni_manager() -> ProcessRecord | None:
    """The NNI manager running this trial: the nearest ancestor that is NNI's ``main.js`` for
    this experiment."""
    experiment = os.environ.get("NNI_EXP_ID", "")
    pid = os.getppid()
    for _ in range(8):
        arguments = command_line(pid)
        if any(a.endswith("main.js") for a in arguments) and experiment in arguments:
            return ProcessRecord.of(pid)
        pid = parent_of(pid) or 0
        if pid <= 1:
            return None
    return None


def _failed(run_dir: Path, trial: str, sequence: int, params: dict[str, Any], answer: dict[str, Any]) -> int:
    if not answer.get("recorded"):  # the worker never got to record it
        from ..trial_records import record_failure

        record_failure(run_dir, trial, sequence, params, answer["reason"])
    if answer.get("traceback"):
        print(answer["traceback"], file=sys.stderr)
    print(f"mpqsearch: trial failed: {answer['reason']}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nni_client")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    channel = NniTrialChannel.from_environment()
    if channel is None:
        command = cold_command(run_dir)
        os.execv(command[0], command)
    params = channel.receive_parameters()
    trial = os.environ.get("NNI_TRIAL_JOB_ID", f"local-{os.getpid()}")
    sequence = int(os.environ.get("NNI_TRIAL_SEQ_ID", "-1"))
    manager = nni_manager()
    answer = request(Slots(run_dir), worker_command(run_dir),
                     {"op": "evaluate", "trial": trial, "sequence": sequence, "params": params}, args.timeout,
                     anchors=[manager] if manager else [])
    if not answer.get("ok"):
        return _failed(run_dir, trial, sequence, params, answer)
    for value in answer["intermediate"]:
        channel.report_intermediate(value)
    channel.report_final(answer["final"])
    print(f"mpqsearch: evaluated in {answer.get('eval_s', 0):.3f} s by a warm worker", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
