"""Turning a picked trial into the files a user takes home: a policy file and an ONNX model.

Example::

    results = load_results("1ix0tvm3")
    policy = picked_policy(results, pick(results, "knee"), rule="knee")
    save_policy(policy, "policy.yaml"); write_onnx(policy, get_workload("example"), "model.onnx")
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..apply import apply_policy
from ..policy import Policy
from ..quant.export import export_onnx
from ..workloads import Workload
from .pick import PickError
from .table import Results, TrialRow


def picked_policy(results: Results, row: TrialRow, rule: str) -> Policy:
    """``row``'s policy carrying its measured metrics and where it came from (experiment, trial,
    strategy, the rule, and the latency backend that measured it)."""
    if row.policy is None:
        raise PickError(f"trial {row.number} of experiment {results.experiment} has no policy: the experiment file "
                        "is unknown (pass --config experiment.yaml)")
    provenance = {"experiment": results.experiment, "trial": row.trial_id, "number": row.number,
                  "strategy": row.strategy, "driver": results.driver, "rule": rule,
                  "workload": results.config.workload_spec if results.config is not None else results.workload}
    if results.config is not None:
        latency = results.config.latency
        provenance["latency"] = {"backend": latency.backend, "threads": latency.threads, "target": row.policy.target}
    return replace(row.policy, metrics=dict(row.metrics), provenance=provenance)


def write_onnx(policy: Policy, workload: Workload, path: str | os.PathLike, target: str | None = None) -> Path:
    """The QDQ ONNX model of ``policy`` on ``workload``'s model, calibrated on its data, for
    ``target`` (default: the one the policy was quantized, and its latency measured, for)."""
    model = workload.build_model().eval()
    return export_onnx(apply_policy(model, policy, workload.calib_data), workload.example_input, path, target=target)
