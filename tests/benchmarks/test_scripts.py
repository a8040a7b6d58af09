"""Smoke tests of the benchmark scripts: each runs on its smallest options and prints its table.

Benchmarks time things; these tests only check that the scripts run and print what they promise
(no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_onnx_latency_prints_the_anchor_and_the_pick():
    out = run("onnx_latency.py", "--workloads", "sr-espcn-x2", "--sizes", "builtin,24x32", "--threads", "1",
              "--policies", "8/8", "--rounds", "1", "--repeats", "1", "--warmup", "0")
    assert "| sr-espcn-x2 | 96x96 | 1 | ORT quantize_static W8A8 |" in out
    assert "| sr-espcn-x2 | 24x32 | 1 | ours W8A8 portable |" in out
    assert "fastest exact within 0.1 of FP32 is ours W8A8" in out
    assert "load average" in out
