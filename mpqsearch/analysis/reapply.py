"""Re-evaluating an exported policy and comparing with what the search recorded.

Accuracy, size and BOPs are deterministic up to float summation order (thread counts), so they
must agree within :data:`RELATIVE_NOISE`; latency is a timing on this machine and is compared
within :data:`LATENCY_NOISE`.

Example::

    checks = reapply(load_policy("policy.yaml"), get_workload("example"))
    [c for c in checks if not c.ok]        # empty when the policy reproduces
"""

from __future__ import annotations

from dataclasses import dataclass

from ..policy import Policy
from ..trials.evaluate import Evaluator
from ..trials.latency import backend_options
from ..workloads import Workload

RELATIVE_NOISE = 1e-4
LATENCY_NOISE = 0.5
"""Latency may differ by half the recorded value (another machine, load) before it is flagged."""


@dataclass
class MetricCheck:
    """One recorded metric against its new measurement."""

    name: str
    recorded: float
    measured: float | None

    @property
    def tolerance(self) -> float:
        relative = LATENCY_NOISE if self.name == "latency_ms" else RELATIVE_NOISE
        return relative * max(abs(self.recorded), 1e-12)

    @property
    def ok(self) -> bool:
        return self.measured is not None and abs(self.measured - self.recorded) <= self.tolerance


def reapply(policy: Policy, workload: Workload, latency: str | None = None,
            threads: int | None = None) -> list[MetricCheck]:
    """Evaluate ``policy`` on ``workload`` as a trial would (latency backend and threads from the
    policy's provenance unless given; the policy's own target) and check every recorded metric."""
    recorded_latency = policy.provenance.get("latency") or {}
    backend = latency or recorded_latency.get("backend", "onnxruntime")
    options = backend_options(backend, threads or recorded_latency.get("threads", 1))
    evaluator = Evaluator(workload, latency=backend, latency_options=options)
    measured = evaluator.evaluate(policy).flat_metrics()
    return [MetricCheck(name, value, measured.get(name)) for name, value in policy.metrics.items()]
