"""Latency backends: structure of their results, the lookup table's cache and arithmetic.

Nothing here asserts on a timing: runs are few and only the shape of the answers is checked.
"""

import json

import pytest
import torch

from mpqsearch import Policy, SearchSpace, apply_policy
from mpqsearch.trials.latency import (
    LatencyRequest,
    LatencyResult,
    LookupTableBackend,
    backend_options,
    compare_with_end_to_end,
    get_latency_backend,
    latency_backend_names,
    lut_measure,
)
from mpqsearch.trials.latency.lut import BASE_KINDS, execution_kind, plan_layers
from mpqsearch.trials.latency.lut_measure import GRAPHS

FAST = {"repeats": 3, "warmup": 1}


@pytest.fixture
def request_for(example_model, example_input, calib_data):
    space = SearchSpace.from_model(example_model, example_input)

    def make(weight_bits=8, act_bits=8):
        policy = Policy.uniform(space, weight_bits, act_bits)
        qmodel = apply_policy(example_model, policy, calib_data)
        return LatencyRequest(example_model, qmodel, example_input, space, policy)
    return make


@pytest.fixture
def counted(monkeypatch):
    """Replace the lookup table's interleaved timer by a counter returning a fixed time per file
    key (its length in milliseconds), with no spread."""
    calls = []

    def fake_time_interleaved(files, *, threads, warmup, runs, rounds):
        calls.extend(files)
        return {key: [float(len(key))] * (runs * rounds) for key in files}
    monkeypatch.setattr(lut_measure, "time_interleaved", fake_time_interleaved)
    return calls


def test_registry_and_options():
    assert latency_backend_names() == ["lut", "none", "onnxruntime", "torch"]
    with pytest.raises(ValueError, match="unknown latency backend 'tvm'.*lut, none, onnxruntime, torch"):
        get_latency_backend("tvm")
    with pytest.raises(ValueError, match="'onnxruntime'.*'cores'"):
        get_latency_backend("onnxruntime", cores=2)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        get_latency_backend("torch", threads=0)
    with pytest.raises(ValueError, match="'none'.*'threads'"):
        get_latency_backend("none", threads=1)


def test_none_measures_nothing(request_for):
    assert get_latency_backend("none").measure(request_for()) is None


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_end_to_end_results(name, request_for):
    result = get_latency_backend(name, threads=1, **FAST).measure(request_for(4, 8))
    assert isinstance(result, LatencyResult)
    assert (result.backend, result.method, result.runs, result.threads) == (name, "end-to-end", 3, 1)
    assert result.median_ms > 0 and result.iqr_ms >= 0
    assert set(result.to_dict()) == {"median_ms", "iqr_ms", "runs", "backend", "method", "threads"}
    json.dumps(result.to_dict())


def test_backends_need_what_they_time(request_for):
    request = request_for()
    without_model = LatencyRequest(request.model, None, request.example_input, request.space, request.policy)
    for name in ("onnxruntime", "torch"):
        with pytest.raises(ValueError, match="quantized model"):
            get_latency_backend(name).measure(without_model)
    without_policy = LatencyRequest(request.model, request.qmodel, request.example_input)
    with pytest.raises(ValueError, match="no policy"):
        get_latency_backend("lut").measure(without_policy)


def test_torch_backend_restores_threads_and_mode(request_for):
    request = request_for()
    request.qmodel.train()
    before = torch.get_num_threads()
    get_latency_backend("torch", threads=1, **FAST).measure(request)
    assert torch.get_num_threads() == before and request.qmodel.training


def test_execution_kinds():
    # 8-bit weights quantized for portable (within +-64) are int8, full-range ones (quantized for
    # vnni) int8 in a vnni file and uint8 in a portable one
    assert execution_kind(8, 8, 8) == execution_kind(8, 4, 6, "portable", "portable") == "u8s8"
    assert execution_kind(8, 8, 8, "portable", "vnni") == execution_kind(8, 4, 6, "portable", "vnni") == "u8u8"
    assert execution_kind(7, 8, 8) == execution_kind(2, 4, 6) == "u8s8"
    assert execution_kind(8, 16, 8) == execution_kind(16, 12, 9) == "int16"
    assert execution_kind(32, 8, 8) == execution_kind(32, 32, 32) == "float"
    # quantized weights next to a float tensor: a float kernel on dequantized weights
    assert execution_kind(8, 32, 8) == execution_kind(8, 8, 32) == execution_kind(16, 32, 16) == "dqw"
    assert execution_kind(8, 8, 8, "vnni") == execution_kind(7, 8, 8, "vnni") == "u8s8"  # int8 8-bit weights


def test_backends_take_the_export_target_or_refuse_it():
    assert backend_options("none", 2, "vnni") == {}
    assert backend_options("lut", 2) == {"threads": 2}
    assert get_latency_backend("onnxruntime", **backend_options("onnxruntime", 1, "vnni")).target == "vnni"
    assert get_latency_backend("lut", **backend_options("lut", 1, "vnni")).target == "vnni"
    with pytest.raises(ValueError, match="'torch' does not take the options \\['target', 'threads'\\]"):
        get_latency_backend("torch", **backend_options("torch", 1, "vnni"))
    with pytest.raises(ValueError, match="unknown export target 'arm'"):
        get_latency_backend("onnxruntime", target="arm")


def test_layer_plans_follow_the_quantized_tensors(example_model, example_input):
    plans, _ = plan_layers(example_model, example_input)
    sources = {name: plan.source for name, plan in plans.items()}
    # the residual add reads at its tied group's bits (stem's), the concat at branch_a's and
    # branch_b's, the model input at input_bits, the mean head reads at the bits of up, whose
    # activation it averages
    assert sources == {"stem": "<input>", "block.conv": "stem", "block.depthwise": "block.conv", "branch_a": "stem",
                       "branch_b": "stem", "up": "branch_a", "head": "up"}
    assert plans["up"].input_shape == (1, 16, 32, 32) and plans["head"].input_shape == (1, 8)
    space = SearchSpace.from_model(example_model, example_input)
    kinds = {name: plan.kind(Policy.uniform(space, 8, 8)) for name, plan in plans.items()}
    # every layer runs as its int8 kind: stem's output is quantized before its ReLU (which no int8
    # kernel folds into the signed grid stem shares with block.depthwise)
    assert kinds == dict.fromkeys(plans, "u8s8")  # the file follows the policy's target: int8 weights
    full_range = Policy.uniform(space, 8, 8)
    full_range.target = "vnni"
    assert {plan.kind(full_range, "portable") for plan in plans.values()} == {"u8u8"}
    policy = Policy.uniform(space, 8, 8, input_bits=16)
    policy.layers["stem"] = policy.layers["stem"].__class__(8, 16)  # the add follows stem's group
    assert plans["stem"].kind(policy) == plans["branch_a"].kind(policy) == "int16"
    policy.input_bits = 32
    assert plans["stem"].kind(policy) == "dqw"  # 8-bit weights reading a float input


LAYERS = ("stem", "block.conv", "block.depthwise", "branch_a", "branch_b", "up", "head")


def test_lookup_table_gives_its_calibration_graphs_exactly(counted, request_for, tmp_path):
    backend = LookupTableBackend(cache_dir=tmp_path, **FAST)
    fp32 = backend.measure(request_for(32, 32))
    table = json.loads(backend.table_path(request_for().model, request_for().example_input).read_text())
    graphs = {name: entry["median_ms"] for name, entry in table["graphs"].items()}
    assert (fp32.backend, fp32.method) == ("lut", "lookup-table")
    # a uniform policy of a calibration graph's kind is that graph's time (the constants' definition)
    assert fp32.median_ms == pytest.approx(graphs["float"])
    assert backend.measure(request_for(7, 8)).median_ms == pytest.approx(graphs["u8s8"])
    assert backend.measure(request_for(16, 16)).median_ms == pytest.approx(graphs["int16"])
    # narrower activations add the narrow graph's per-tensor cost, spread over the layers' outputs
    assert backend.measure(request_for(7, 6)).median_ms == pytest.approx(graphs["narrow"])
    assert set(table["layers"]) == set(LAYERS) and all(set(e) == set(BASE_KINDS) for e in table["layers"].values())
    assert table["conditions"]["drift"] == 0 and "load_before" in table["conditions"]


def test_lookup_table_measures_every_kind_before_the_search(counted, request_for, tmp_path):
    request = request_for(4, 8)
    backend = LookupTableBackend(cache_dir=tmp_path, **FAST)
    backend.prepare(request.model, request.example_input, request.space)
    measured = set(counted)
    assert measured == {f"{n}|{k}" for n in LAYERS for k in BASE_KINDS} | {f"graph|{g}" for g in GRAPHS}
    for bits in [(4, 8), (8, 16), (32, 32), (8, 32), (2, 4)]:
        backend.measure(request_for(*bits))
    assert set(counted) == measured  # nothing measured inside a trial


def test_lookup_table_round_trips_through_its_file(counted, request_for, tmp_path, monkeypatch):
    request = request_for(4, 8)
    monkeypatch.setattr(lut_measure, "load_average", lambda: 0.0)  # a quiet machine: the table is settled
    first = LookupTableBackend(cache_dir=tmp_path, **FAST).measure(request)
    measured = len(counted)
    assert measured == len(LAYERS) * len(BASE_KINDS) + len(GRAPHS)
    again = LookupTableBackend(cache_dir=tmp_path, **FAST)
    again.prepare(request.model, request.example_input, request.space)  # settled: not measured again
    assert len(counted) == measured and again.measure(request) == first
    vnni = request_for(8, 8)
    vnni.policy.target = "vnni"
    LookupTableBackend(cache_dir=tmp_path, target="portable", **FAST).measure(vnni)
    assert len(counted) == measured + len(LAYERS)  # only the u8u8 entries, on demand


def test_a_table_measured_under_load_is_measured_again_before_the_next_search(counted, request_for, tmp_path,
                                                                           monkeypatch):
    request = request_for(4, 8)
    monkeypatch.setattr(lut_measure, "load_average", lambda: 100.0)
    backend = LookupTableBackend(cache_dir=tmp_path, **FAST)
    backend.prepare(request.model, request.example_input, request.space)
    assert backend.conditions(request.model, request.example_input)["provisional"]
    measured = len(counted)
    monkeypatch.setattr(lut_measure, "load_average", lambda: 0.0)
    fresh = LookupTableBackend(cache_dir=tmp_path, **FAST)
    fresh.prepare(request.model, request.example_input, request.space)
    assert len(counted) == 2 * measured
    assert not fresh.conditions(request.model, request.example_input)["provisional"]


def test_lookup_table_key_depends_on_threads(request_for, tmp_path):
    request = request_for()
    one = LookupTableBackend(cache_dir=tmp_path, threads=1).table_path(request.model, request.example_input)
    two = LookupTableBackend(cache_dir=tmp_path, threads=2).table_path(request.model, request.example_input)
    again = LookupTableBackend(cache_dir=tmp_path, threads=1).table_path(request.model, request.example_input)
    assert one != two and one == again and one.parent == tmp_path


def test_compare_with_end_to_end(counted, request_for, tmp_path):
    table, end_to_end = compare_with_end_to_end(request_for(), cache_dir=tmp_path, **FAST)
    assert (table.method, end_to_end.method) == ("lookup-table", "end-to-end")
    assert end_to_end.backend == "onnxruntime" and end_to_end.runs == 3


def test_an_unreadable_table_is_measured_again(counted, request_for, tmp_path):
    request = request_for()
    backend = LookupTableBackend(cache_dir=tmp_path, **FAST)
    path = backend.table_path(request.model, request.example_input)
    path.write_text("{not json")
    result = backend.measure(request)
    assert result.method == "lookup-table" and counted
    assert json.loads(path.read_text())["layers"]


def test_a_vnni_space_timed_as_portable_files_gets_its_u8u8_entries_before_the_search(counted, request_for,
                                                                                       tmp_path):
    request = request_for(8, 8)
    space = SearchSpace.from_model(request.model, request.example_input, target="vnni")
    backend = LookupTableBackend(cache_dir=tmp_path, target="portable", **FAST)
    backend.prepare(request.model, request.example_input, space)
    assert {f"{n}|u8u8" for n in LAYERS} <= set(counted)
    measured = len(counted)
    policy = Policy.uniform(space, 8, 8)
    backend.measure(LatencyRequest(request.model, None, request.example_input, space, policy))
    assert len(counted) == measured
