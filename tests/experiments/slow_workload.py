"""A test workload whose every evaluation takes at least ``SECONDS``: long enough for a test to
kill, join or resume an experiment while trials run."""

import time
from dataclasses import replace

from mpqsearch.workloads.example import example_workload

SECONDS = 0.25


def slow():
    workload = example_workload()
    base = workload.metric

    def metric(output, target):
        time.sleep(SECONDS / len(workload.eval_data))
        return base(output, target)

    return replace(workload, name="slow", metric=metric)
