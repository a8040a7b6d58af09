"""The ONNX QDQ export computes what the fake-quant model computes, in ONNX Runtime too.

Tolerance: ONNX Runtime rounds differently from torch only at rounding boundaries
(``x / s`` against ``x * (1/s)``, int32 accumulation and bias, the fused kernels' float
requantization), so a few activations may land one level away. On these models that moves the
output by at most one output quantization step, on well under 2 % of its elements (measured:
at most 2 of 640); a model kept in float differs by float summation order only.
"""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from mpqsearch.quant import ActFakeQuant, LayerQuantConfig, WeightFakeQuant, quantizable_layers, quantize_model
from mpqsearch.quant.export import deployable_copy, export_onnx, onnxruntime_session

LAYERS = ("stem", "block.conv", "block.depthwise", "branch_a", "branch_b", "up", "head")
MIXED = {  # tied activations (stem+block.depthwise, branch_a+branch_b) share their bits
    "stem": (5, 6), "block.depthwise": (16, 6), "block.conv": (32, 5), "branch_a": (4, 16),
    "branch_b": (3, 16), "up": (6, 32), "head": (8, 7),
}
POLICIES = {
    "W8A8": dict.fromkeys(LAYERS, LayerQuantConfig(8, 8)),
    "W4A8": dict.fromkeys(LAYERS, LayerQuantConfig(4, 8)),
    "mixed 3..16 and 32 bits": {name: LayerQuantConfig(*bits) for name, bits in MIXED.items()},
    "W8A8 shift scales": dict.fromkeys(LAYERS, LayerQuantConfig(8, 8, scale="shift")),
    "W6A6 per tensor": dict.fromkeys(LAYERS, LayerQuantConfig(6, 6, granularity="per_tensor")),
    "W16A16": dict.fromkeys(LAYERS, LayerQuantConfig(16, 16)),
    "W32A8": dict.fromkeys(LAYERS, LayerQuantConfig(32, 8)),
}


@pytest.fixture
def inputs():
    return torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 1.5


def _ort_run(path, x, **options):
    session = onnxruntime_session(path, **options)
    return session.run(None, {"input": x.numpy()})[0]


def _onnx_parts(path):
    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _optimized_ops(path, tmp_path):
    optimized = tmp_path / "optimized.onnx"
    onnxruntime_session(path, optimized_model_path=optimized)
    return [node.op_type for node in onnx.load(str(optimized)).graph.node]


@pytest.mark.parametrize("policy", POLICIES)
def test_onnxruntime_computes_what_the_fake_quant_model_computes(policy, example_model, calib_data, inputs, tmp_path):
    qmodel = quantize_model(example_model, POLICIES[policy], calib_data)
    path = export_onnx(qmodel, inputs[:1], tmp_path / "model.onnx", dynamic_batch=True)
    with torch.no_grad():
        expected = qmodel(inputs).numpy()
    diff = np.abs(_ort_run(path, inputs) - expected)
    head = qmodel.mpq_act.head
    if head.bits == 32:
        assert diff.max() < 1e-5
    else:
        step = float(head.scale)
        float_error = 1e-6 * np.abs(expected).max()  # (q1 - q2) * s computed from two outputs
        assert diff.max() <= step + float_error
        assert (diff > step / 2).mean() < 0.02
        assert diff.mean() < 0.02 * step


def test_deployable_copy_is_exact_and_leaves_the_model_alone(example_model, calib_data, inputs):
    qmodel = quantize_model(example_model, POLICIES["mixed 3..16 and 32 bits"], calib_data)
    with torch.no_grad():
        before = qmodel(inputs)
        copy = deployable_copy(qmodel)
        assert torch.equal(copy(inputs), before)
        assert torch.equal(qmodel(inputs), before)
    assert not any(isinstance(m, (ActFakeQuant, WeightFakeQuant)) for m in copy.modules())
    assert isinstance(qmodel.stem.parametrizations.weight[0], WeightFakeQuant)


def test_weights_are_integer_levels_and_activations_qdq(example_model, calib_data, tmp_path):
    policy = dict(POLICIES["mixed 3..16 and 32 bits"])
    qmodel = quantize_model(example_model, policy, calib_data)
    model, tensors = _onnx_parts(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"))
    for name in LAYERS:
        layer = qmodel.get_submodule(name)
        key = f"{name}.parametrizations.weight.0.levels"
        if policy[name].weight_bits == 32:
            assert key not in tensors and tensors[f"{name}.weight"].dtype == np.float32
            continue
        quantizer = layer.parametrizations.weight[0]
        shape = [-1 if d == quantizer.axis else 1 for d in range(layer.weight.dim())]
        with torch.no_grad():
            levels = torch.round(layer.weight / quantizer.scale.reshape(shape)).numpy()
        stored = tensors[key]
        assert stored.dtype == (np.int8 if policy[name].weight_bits <= 8 else np.int16)
        np.testing.assert_array_equal(stored, levels)
        assert np.abs(stored).max() <= 2 ** (policy[name].weight_bits - 1) - 1
    zero_points = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            scale = node.input[1]
            zero_points.setdefault(scale, set()).add(node.input[2])
    # each quantized activation is one Q/DQ family with its own scale; 32-bit "up" has none
    act_scales = {n for n in tensors if n.startswith("mpq_act.")}
    assert act_scales == {"mpq_act.stem.scale", "mpq_act.block__conv.scale", "mpq_act.branch_a.scale",
                          "mpq_act.head.scale"}
    assert np.isclose(tensors["mpq_act.head.scale"], float(qmodel.mpq_act.head.scale))
    types = {node.output[0]: numpy_helper.to_array(node.attribute[0].t).dtype
             for node in model.graph.node if node.op_type == "Constant"}
    q_types = {node.input[1]: types[node.input[2]] for node in model.graph.node
               if node.op_type == "QuantizeLinear" and node.input[1] in act_scales}
    assert q_types["mpq_act.block__conv.scale"] == np.uint8  # 5 bits after ReLU
    assert q_types["mpq_act.branch_a.scale"] == np.int16  # 16 bits, signed
    assert q_types["mpq_act.head.scale"] == np.int8  # 7 bits, signed


def test_bits_below_the_container_are_clipped_exactly(tmp_path):
    layer = nn.Conv2d(2, 3, 1)
    model = nn.Sequential(layer).eval()
    x = torch.randn(1, 2, 4, 4)
    qmodel = quantize_model(model, {"0": LayerQuantConfig(8, 5)}, [x])
    big = torch.randn(8, 2, 4, 4) * 10  # far outside the calibrated range: saturates
    path = export_onnx(qmodel, x, tmp_path / "clip.onnx", dynamic_batch=True)
    levels = _ort_run(path, big) / float(qmodel.mpq_act.get_submodule("0").scale)
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    assert levels.min() == pytest.approx(-16) and levels.max() == pytest.approx(15)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Clip") == 1 and ops.count("QuantizeLinear") == 2


class Chain(nn.Module):
    """ESPCN-like: conv-ReLU-conv-ReLU-conv-pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return nn.functional.pixel_shuffle(self.conv3(x), 2)


@pytest.mark.parametrize(("weight_bits", "act_bits", "fused"), [(8, 8, 2), (4, 6, 2), (16, 16, 0), (32, 8, 0)])
def test_onnxruntime_fuses_8bit_convs(weight_bits, act_bits, fused, calib_data, tmp_path):
    """conv1 reads the float model input and runs in float; conv2 and conv3 read and write
    8-bit (or narrower) activations: ONNX Runtime runs them as QLinearConv. Wider layers, and
    float weights behind quantized inputs, stay float."""
    model = Chain().eval()
    configs = {name: LayerQuantConfig(weight_bits, act_bits) for name in quantizable_layers(model)}
    qmodel = quantize_model(model, configs, calib_data)
    path = export_onnx(qmodel, calib_data[0][:1], tmp_path / "chain.onnx")
    ops = _optimized_ops(path, tmp_path)
    assert ops.count("QLinearConv") == fused
    assert ops.count("Conv") + ops.count("FusedConv") == 3 - fused


def test_example_model_fusion(example_model, calib_data, tmp_path):
    """Only block.depthwise fuses: stem reads the model input, branch_a/b the residual add and
    head the mean (none quantized in the fake-quant model), up is a ConvTranspose, and
    block.conv reads int8 (the stem's tensor, shared with the add) but writes uint8."""
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data)
    ops = _optimized_ops(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"), tmp_path)
    assert ops.count("QLinearConv") == 1


def test_biases_behind_quantized_inputs_are_int32(example_model, calib_data, tmp_path):
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data)
    model, tensors = _onnx_parts(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"))
    # block.conv and block.depthwise read quantized activations; stem reads the model input
    assert "stem.bias" in tensors and "block.conv.bias" not in tensors
    levels, scale = tensors["block.conv.bias_int32"], tensors["block.conv.bias_scale"]
    assert levels.dtype == np.int32
    weight_scale = qmodel.block.conv.parametrizations.weight[0].scale.numpy()
    np.testing.assert_allclose(scale, float(qmodel.mpq_act.stem.scale) * weight_scale, rtol=1e-6)
    np.testing.assert_allclose(levels * scale, qmodel.block.conv.bias.detach().numpy(), atol=scale.max())


def test_wide_biases_do_not_overflow(example_model, calib_data, tmp_path):
    qmodel = quantize_model(example_model, POLICIES["W16A16"], calib_data)
    _, tensors = _onnx_parts(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"))
    for name in ("block.conv", "block.depthwise"):
        restored = tensors[f"{name}.bias_int32"] * tensors[f"{name}.bias_scale"]
        np.testing.assert_allclose(restored, qmodel.get_submodule(name).bias.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_export_is_quiet_and_checks_the_opset(example_model, calib_data, tmp_path):
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(qmodel, calib_data[0][:1], tmp_path / "a.onnx", opset=17)
    assert not caught
    with pytest.raises(ValueError, match="opset 12"):
        export_onnx(qmodel, calib_data[0][:1], tmp_path / "b.onnx", opset=12)
    wide = quantize_model(example_model, POLICIES["W16A16"], calib_data)
    with pytest.raises(ValueError, match="16-bit tensors need int16"):
        export_onnx(wide, calib_data[0][:1], tmp_path / "c.onnx", opset=20)


def test_refuses_a_model_still_calibrating(example_model, tmp_path):
    from mpqsearch.quant import prepare

    prepared, _, _ = prepare(example_model)
    with pytest.raises(ValueError, match="still observing"):
        export_onnx(prepared, torch.randn(1, 3, 32, 32), tmp_path / "x.onnx")


def test_untraceable_model_exports_through_its_hooks(calib_data, tmp_path):
    class Shaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            if x.dim() == 3:  # torch.fx cannot branch on a traced value; torch.jit.trace can
                x = x.unsqueeze(0)
            return self.b(torch.relu(self.a(x)))

    model = Shaped().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = quantize_model(model, dict.fromkeys(["a", "b"], LayerQuantConfig(8, 8)), calib_data)
    x = calib_data[1]
    path = export_onnx(qmodel, x, tmp_path / "hooks.onnx")
    with torch.no_grad():
        expected = qmodel(x).numpy()
    assert np.abs(_ort_run(path, x) - expected).max() <= float(qmodel.b.act_quant.scale) * (1 + 1e-5)
