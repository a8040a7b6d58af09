"""A test workload whose quantized evaluations can be held mid-trial, to interrupt a trial at a
known point: with ``MPQSEARCH_TEST_BLOCK_DIR`` set, each evaluation of a quantized model (FP32
agrees with itself exactly) writes ``started-<pid>-<n>`` there and waits while ``hold`` exists."""

import itertools
import os
import time
from dataclasses import replace
from pathlib import Path

from mpqsearch.workloads.example import example_workload

BLOCK_ENV = "MPQSEARCH_TEST_BLOCK_DIR"
_count = itertools.count()


def blocking():
    workload = example_workload()
    base = workload.metric

    def metric(output, target):
        values = base(output, target)
        directory = os.environ.get(BLOCK_ENV)
        if directory and values["top1"].mean() < 1.0:
            Path(directory, f"started-{os.getpid()}-{next(_count)}").touch()
            while Path(directory, "hold").exists():
                time.sleep(0.05)
        return values

    return replace(workload, name="blocking", metric=metric)
