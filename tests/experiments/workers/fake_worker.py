"""A worker for the worker tests: no torch, answers after the requested sleep, or misbehaves.

    python fake_worker.py [--fail-start] [slot options]

A request's ``params`` may ask for ``sleep`` (seconds), ``crash`` (exit mid-request) or ``raise``,
and name a file to ``touch`` when the request arrives.
"""

import os
import sys
import time

from mpqsearch.experiments.workers.server import run_worker


def make_handler():
    if "--fail-start" in sys.argv:
        raise RuntimeError("cannot build the setup: no such workload")

    def handle(request):
        params = request["params"]
        if params.get("touch"):
            open(params["touch"], "w").close()
        time.sleep(params.get("sleep", 0))
        if params.get("crash"):
            os._exit(3)
        if params.get("raise"):
            raise ValueError("bad policy")
        return {"final": {"default": params.get("x", 0)}, "pid": os.getpid(), "trial": request["trial"]}

    return handle


if __name__ == "__main__":
    run_worker([a for a in sys.argv[1:] if a != "--fail-start"], make_handler)
