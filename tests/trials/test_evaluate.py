import math
from dataclasses import replace

import pytest
import torch

from mpqsearch import Policy, model_size_bytes
from mpqsearch.trials import Evaluator, MetricError, QuantizationError, evaluate_policy
from mpqsearch.trials import evaluate as evaluate_module
from mpqsearch.workloads.example import example_workload


@pytest.fixture(scope="module")
def workload():
    return example_workload()


def test_a_trial_reports_every_number(workload):
    evaluator = Evaluator(workload, latency="onnxruntime", latency_options={"repeats": 3, "warmup": 1})
    result = evaluator.evaluate(Policy.uniform(evaluator.space, 4, 8))
    assert result.reference == {"top1": 1.0}  # FP32 agrees with itself
    assert 0 < result.metrics["top1"] < 1 and math.isclose(result.drops["top1"], 1 - result.metrics["top1"])
    assert result.size_bytes == model_size_bytes(evaluator.space, Policy.uniform(evaluator.space, 4, 8))
    assert math.isclose(result.size_ratio, result.size_bytes / evaluator.fp32_size)
    assert 0 < result.bops_ratio < 1 and result.bops > 0
    assert result.latency.backend == "onnxruntime" and result.latency.method == "end-to-end"
    assert result.latency.median_ms > 0 and result.latency_isolation == "sole"
    assert set(result.timings) == {"quantize", "metrics", "latency"}
    flat = result.flat_metrics()
    assert flat["top1_drop"] == result.drops["top1"] and flat["latency_ms"] == result.latency.median_ms
    assert result.to_dict()["latency"]["runs"] == 3


def test_fp32_policy_reproduces_the_reference(workload):
    evaluator = Evaluator(workload, latency="none")
    result = evaluator.evaluate(Policy.uniform(evaluator.space, 32, 32))
    assert result.metrics == result.reference and result.size_ratio == 1.0 and result.latency is None


def test_policy_independent_work_is_done_once(workload, monkeypatch):
    calls = {"stats": 0}
    original = evaluate_module.collect_activation_stats

    def counting(*args, **kwargs):
        calls["stats"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "collect_activation_stats", counting)
    evaluator = Evaluator(workload, latency="none")
    for bits in (8, 6, 4, 6):
        evaluator.evaluate(Policy.uniform(evaluator.space, bits, 8))
    assert calls["stats"] == 1
    assert len(evaluator.weight_scales) == 3 * len(evaluator.space.layers)  # one per (layer, bits)


def test_on_disk_cache_serves_a_new_process(workload, tmp_path, monkeypatch):
    first = Evaluator(workload, latency="none", cache_dir=tmp_path)
    policy = Policy.uniform(first.space, 5, 6)
    expected = first.evaluate(policy).metrics
    monkeypatch.setattr(evaluate_module, "collect_activation_stats",
                        lambda *a, **k: pytest.fail("statistics should come from the cache"))
    second = Evaluator(workload, latency="none", cache_dir=tmp_path)
    assert second._reference == first.reference and len(second.weight_scales) == len(first.weight_scales)
    assert second.evaluate(policy).metrics == expected


def test_nan_metric_raises_a_typed_error(workload):
    def nan_metric(output, target):
        return {"top1": torch.full((len(target),), float("nan"))}

    broken = replace(workload, metric=nan_metric)
    with pytest.raises(MetricError, match="top1.*nan"):
        _ = Evaluator(broken, latency="none").reference


def test_quantization_failure_raises_a_typed_error(workload):
    evaluator = Evaluator(workload, latency="none")
    policy = Policy.uniform(evaluator.space, 8, 8)
    policy.layers["branch_b"] = replace(policy.layers["branch_b"], act_bits=6)  # tied with branch_a
    with pytest.raises(QuantizationError, match="branch_a, branch_b"):
        evaluator.evaluate(policy)


def test_evaluate_policy_reuses_its_evaluator(workload):
    first = evaluate_policy(workload, Policy.uniform(Evaluator(workload, latency="none").space, 8, 8), latency="none")
    cached = evaluate_module._last_evaluator[3]
    evaluate_policy(workload, Policy.uniform(cached.space, 6, 8), latency="none")
    assert evaluate_module._last_evaluator[3] is cached and first.metrics["top1"] > 0


def test_evaluator_quantizes_model_inputs_at_the_policys_input_bits():
    evaluator = Evaluator(example_workload(), latency="none")
    float_input = Policy.uniform(evaluator.space, 16, 32, input_bits=32)
    assert evaluator.evaluate(float_input).metrics["top1"] == 1.0
    two_bit_input = Policy.uniform(evaluator.space, 16, 32, input_bits=2)
    assert evaluator.evaluate(two_bit_input).metrics["top1"] < 1.0


def test_a_cache_of_another_format_is_not_read(workload, tmp_path, monkeypatch):
    from mpqsearch.trials import cache

    old = Evaluator(workload, latency="none", cache_dir=tmp_path)
    old.act_stats  # noqa: B018 - stored in the cache
    monkeypatch.setattr(cache, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)
    new = Evaluator(workload, latency="none", cache_dir=tmp_path)
    assert new.cache.path != old.cache.path and new.cache.load("act_stats") is None
