"""Blocks of common vision networks (look-alikes in :mod:`lookalikes`): the ONNX export computes what the
fake-quant model computes, and ONNX Runtime runs every conv and linear layer in an int8 kernel.

Tolerance as in test_export.py: one output step at most, on few elements (measured: none differ)."""

import collections

import lookalikes
import numpy as np
import onnx
import pytest
import torch

from mpqsearch.quant import LayerQuantConfig, quantizable_layers, quantize_model
from mpqsearch.quant.export import export_onnx, onnxruntime_session
from mpqsearch.quant.modules import ActFakeQuant

INT8_LAYER_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat")
POLICIES = {"W8A8": LayerQuantConfig(8, 8), "W4A6 per tensor": LayerQuantConfig(4, 6, granularity="per_tensor")}


def _export(name, config, tmp_path):
    model = lookalikes.build(name)
    x = lookalikes.images()
    qmodel = quantize_model(model, dict.fromkeys(quantizable_layers(model), config), [x[:4]])
    path = export_onnx(qmodel, x[:1], tmp_path / "model.onnx", dynamic_batch=True)
    optimized = tmp_path / "optimized.onnx"
    output = onnxruntime_session(path, optimized_model_path=optimized).run(None, {"input": x.numpy()})[0]
    ops = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return model, qmodel, x, output, ops


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", lookalikes.LOOKALIKES)
def test_export_equals_the_fake_quant_model(name, policy, tmp_path):
    _, qmodel, x, output, _ = _export(name, POLICIES[policy], tmp_path)
    with torch.no_grad():
        expected = qmodel(x).numpy()
    step = float([m for n, m in qmodel.named_modules() if n.startswith("mpq_act.")][-1].scale)
    diff = np.abs(output - expected)
    assert diff.max() <= step * (1 + 1e-5) and (diff > step / 2).mean() < 0.02


@pytest.mark.parametrize("name", lookalikes.LOOKALIKES)
def test_every_layer_runs_in_an_int8_kernel(name, tmp_path):
    """Batch norms after convs are folded (densenet's after its concats stay, in float); every conv
    runs as QLinearConv, every classifier as QGemm, convnext's channels-last linears as int8
    MatMuls; the SE blocks' pooling, gate and multiply run on integers too."""
    model, _, _, _, ops = _export(name, POLICIES["W8A8"], tmp_path)
    assert sum(ops[op] for op in INT8_LAYER_OPS) == len(quantizable_layers(model))
    assert ops["Conv"] == ops["FusedConv"] == ops["Gemm"] == ops["MatMul"] == 0
    assert ops["BatchNormalization"] == (3 if name == "densenet" else 0)
    if name in ("efficientnet", "mobilenet_v3"):
        assert ops["QLinearGlobalAveragePool"] == 3 and ops["QLinearMul"] == 2  # two SE blocks, the classifier
    if name == "efficientnet":
        assert ops["QLinearSigmoid"] == 2


def test_activations_bounded_below_get_a_zero_point(tmp_path):
    """SiLU outputs (>= -0.2785) are quantized on an asymmetric grid: all 2^b levels from the
    calibrated minimum up, the zero point where 0 falls; the export writes that zero point."""
    model = lookalikes.build("efficientnet")
    x = lookalikes.images()
    qmodel = quantize_model(model, dict.fromkeys(quantizable_layers(model), LayerQuantConfig(8, 6)), [x[:4]])
    quantizer = qmodel.mpq_act.blocks__0__expand__0
    assert isinstance(quantizer, ActFakeQuant) and quantizer.affine and not quantizer.unsigned
    assert 0 < quantizer.zero_point < 63
    stats = quantizer.stats
    assert -0.2785 <= float(stats.min) < 0
    assert torch.isclose(quantizer.scale, (stats.max - stats.min) / 63)
    levels = torch.round(quantizer(torch.linspace(-1, 10, 5000)) / quantizer.scale) + quantizer.zero_point
    assert levels.min() == 0 and levels.max() == 63
    assert qmodel.mpq_act.stem__0.zero_point == 0  # tied with the projections (no activation): symmetric
    graph = onnx.load(str(export_onnx(qmodel, x[:1], tmp_path / "m.onnx"))).graph
    zeros = {int(onnx.numpy_helper.to_array(node.attribute[0].t)) for node in graph.node
             if node.op_type == "Constant" and node.output[0].startswith("/blocks__0__expand__0")}
    assert quantizer.zero_point in zeros
