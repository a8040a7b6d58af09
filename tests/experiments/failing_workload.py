"""A test workload whose first imperfect trial, across all processes, reports a NaN metric."""

import os
from dataclasses import replace

import torch

from mpqsearch.workloads.example import example_workload

CLAIM_ENV = "MPQSEARCH_TEST_FAIL_CLAIM"


def failing_once():
    workload = example_workload()
    base = workload.metric

    def metric(output, target):
        values = base(output, target)
        if values["top1"].mean() < 1.0:  # a quantized model; FP32 agrees with itself exactly
            try:
                os.close(os.open(os.environ[CLAIM_ENV], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return values
            return {"top1": values["top1"] * torch.tensor(float("nan"))}
        return values

    return replace(workload, name="failing-once", metric=metric)
