"""Smoke tests of the benchmark scripts: each runs on its smallest options and prints its table.

Benchmarks time things; these tests only check that the scripts run and print what they promise
(no timing is asserted), so that a change of the package cannot leave a script broken unnoticed.
Scripts that need more than about 20 s at their smallest setting are marked slow.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str, timeout: int = 600) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_onnx_latency_prints_the_anchor_and_the_pick():
    out = run("onnx_latency.py", "--quick")
    assert "| sr-espcn-x2 | 96x96 | 1 | ORT quantize_static W8A8 |" in out
    assert "| sr-espcn-x2 | 24x32 | 1 | ours W8A8 portable |" in out
    assert "| sr-espcn-x2 | 24x32 | 1 | ours W4A8 ends W8 |" in out
    assert "fastest exact within 0.1 of FP32 is ours" in out
    assert "load average" in out


def test_lut_accuracy_prints_rank_correlation_and_errors():
    out = run("lut_accuracy.py", "--quick", "--verbose")
    assert "| workload | policies | measured ms (min-max) | Spearman | measured vs itself (split rounds) |" in out
    assert "| median error | worst error |" in out
    assert "| sr-espcn-x2 | 4 |" in out
    assert "| sr-espcn-x2 | 3 |" in out  # the last of the four policies, in the verbose table
    assert "# targets: Spearman >= 0.9, median error <= 10 %" in out


def test_real_models_runs_or_says_torchvision_is_missing():
    out = run("real_models.py", "--quick")
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision is not installed: skipped" in out
    else:
        assert "| squeezenet1_1 |" in out and "ONNX vs fake-quant, min cosine" in out


def test_uniform_baselines_runs():
    out = run("uniform_baselines.py", "--workloads", "example", "--repeats", "2")
    assert "example" in out


def test_trial_cost_runs():
    out = run("trial_cost.py", "--workloads", "example", "--repeats", "1", "--threads", "1")
    assert "example" in out
