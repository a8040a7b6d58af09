"""The ``none`` backend: trials measure no latency (``latency_ms`` is absent from results)."""

from __future__ import annotations

from .base import LatencyBackend, LatencyRequest, register_latency_backend


@register_latency_backend
class NoLatency(LatencyBackend):
    """Measures nothing and takes no options."""

    name = "none"

    def measure(self, request: LatencyRequest) -> None:
        return None
