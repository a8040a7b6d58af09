"""The fake-quant model computes what ONNX Runtime's fused integer kernels compute, bit for bit.

Two levels: each kernel of :mod:`mpqsearch.quant.integer` against the ONNX Runtime op on its own,
on every pair of 8-bit inputs (so every rounding boundary those inputs reach) for random scales and
zero points; and small models, exported, whose every op runs in one of these kernels, against the
fake-quant model (0 output steps), with power-of-two scales that put many results exactly on a
rounding boundary.
"""

import collections

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from mpqsearch.quant import LayerQuantConfig, quantizable_layers, quantize_model
from mpqsearch.quant import exact as exact_module
from mpqsearch.quant.exact import exact_kernels
from mpqsearch.quant.export import deployable_copy, export_onnx, onnxruntime_session
from mpqsearch.quant.integer import Grid, logistic, qlinear_add, qlinear_global_average_pool, qlinear_mul
from mpqsearch.quant.qdq import QuantizedActivation
from mpqsearch.quant.spec import cpu_has_vnni

ALL_A = np.repeat(np.arange(256, dtype=np.uint8), 256)
ALL_B = np.tile(np.arange(256, dtype=np.uint8), 256)


def _run_op(op, inputs, params, output_shape, **attributes):
    """One com.microsoft ``op`` in ONNX Runtime; ``inputs`` uint8 graph inputs, ``params`` constants,
    interleaved in the op's order as ``names``."""
    names = [*inputs, *params]
    order = attributes.pop("order")
    graph = helper.make_graph(
        [helper.make_node(op, order, ["y"], domain="com.microsoft", **attributes)], "kernel",
        [helper.make_tensor_value_info(n, TensorProto.UINT8, v.shape) for n, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, output_shape)],
        [numpy_helper.from_array(v, n) for n, v in params.items()])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    assert set(order) <= set(names)
    return onnxruntime_session(model.SerializeToString()).run(None, dict(inputs))[0]


def _draw(rng, ties=False):
    """A scale and a uint8 zero point; ``ties``: powers of two (ratios land on half levels)."""
    scale = np.float32(2.0 ** rng.integers(-9, -3)) if ties else np.float32(rng.uniform(1e-3, 0.1))
    return scale, int(rng.choice([0, 128, int(rng.integers(0, 256))]))


def _grid(scale, zero):
    return Grid(torch.tensor(float(scale)), zero, -zero, 255 - zero)


def _params(**pairs):
    params = {}
    for name, (scale, zero) in pairs.items():
        params[f"{name}_scale"], params[f"{name}_zero"] = np.array(scale, np.float32), np.array(zero, np.uint8)
    return params


def _centered(stored, zero):
    return torch.from_numpy(stored.astype(np.float32)) - zero


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_kernels_on_every_pair_of_levels(op, ties):
    rng = np.random.default_rng(7 + ties)
    kernel = qlinear_add if op == "QLinearAdd" else qlinear_mul
    for _ in range(12):
        (sa, za), (sb, zb), (sc, zc) = _draw(rng, ties), _draw(rng, ties), _draw(rng, ties)
        order = ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "c_scale", "c_zero"]
        params = _params(a=(sa, za), b=(sb, zb), c=(sc, zc))
        stored = _run_op(op, {"a": ALL_A, "b": ALL_B}, params, [65536], order=order)
        levels = kernel(_centered(ALL_A, za), _grid(sa, za), _centered(ALL_B, zb), _grid(sb, zb), _grid(sc, zc))
        np.testing.assert_array_equal(levels.numpy(), stored.astype(np.float32) - zc)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("small_first", [False, True])
def test_broadcast_operands(op, small_first):
    """A per-channel operand ([N, C, 1, 1]) against a full one, either side: ONNX Runtime hands
    the kernel the broadcast operand second (exact_add does the same)."""
    rng = np.random.default_rng(3)
    full = rng.integers(0, 256, (2, 16, 5, 7)).astype(np.uint8)
    small = rng.integers(0, 256, (2, 16, 1, 1)).astype(np.uint8)
    for _ in range(8):
        (sf, zf), (ss, zs), (sc, zc) = _draw(rng), _draw(rng), _draw(rng)
        first, second = (("s", small, ss, zs), ("f", full, sf, zf))[::1 if small_first else -1]
        order = [first[0], f"{first[0]}_scale", f"{first[0]}_zero", second[0], f"{second[0]}_scale",
                 f"{second[0]}_zero", "c_scale", "c_zero"]
        stored = _run_op(op, {"f": full, "s": small}, _params(f=(sf, zf), s=(ss, zs), c=(sc, zc)), list(full.shape),
                         order=order)
        values = {name: _grid(scale, zero).values(_centered(data, zero)) for name, data, scale, zero in (first, second)}
        quantizers = {name: QuantizedActivation(torch.tensor(float(scale)), 8, False, zero)
                      for name, scale, zero in (("f", sf, zf), ("s", ss, zs), ("c", sc, zc))}
        dispatch = exact_module.exact_add if op == "QLinearAdd" else exact_module.exact_mul
        with torch.no_grad():  # the model's operand order: small first or second
            result = dispatch(values[first[0]], values[second[0]], quantizers[first[0]], quantizers[second[0]],
                              quantizers["c"])
        np.testing.assert_array_equal((result / float(sc)).round().numpy(), stored.astype(np.float32) - zc)


def test_sigmoid_and_leaky_relu_lookup_tables():
    """QLinearSigmoid's table holds MLAS's logistic approximation (not torch.sigmoid); QLinearLeakyRelu's
    what F.leaky_relu computes; both quantized by division, as the fake-quant model's quantizers do."""
    rng = np.random.default_rng(5)
    levels = np.arange(256, dtype=np.uint8)
    order = ["x", "x_scale", "x_zero", "y_scale", "y_zero"]
    sigmoid_flips = 0
    for _ in range(40):
        (sx, zx), zy = (np.float32(rng.uniform(1e-3, 0.2)), int(rng.integers(0, 256))), int(rng.integers(0, 32))
        sy = np.float32(rng.uniform(1 / 600, 1 / 200))
        x = _grid(sx, zx).values(_centered(levels, zx))
        stored = _run_op("QLinearSigmoid", {"x": levels}, _params(x=(sx, zx), y=(sy, zy)), [256], order=order)
        expected = (logistic(x) / float(sy)).round() + zy
        np.testing.assert_array_equal(expected.clamp(0, 255).numpy(), stored)
        sigmoid_flips += int(((torch.sigmoid(x) / float(sy)).round() + zy).clamp(0, 255).ne(expected).sum())
        stored = _run_op("QLinearLeakyRelu", {"x": levels}, _params(x=(sx, zx), y=(sx * 0.7, zx)), [256],
                         order=order, alpha=0.2)
        expected = (F.leaky_relu(x, 0.2) / float(np.float32(sx * 0.7))).round() + zx
        np.testing.assert_array_equal(expected.clamp(0, 255).numpy(), stored)
    assert sigmoid_flips > 0  # torch.sigmoid would not do


@pytest.mark.parametrize("ties", [False, True])
def test_global_average_pool(ties):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (2, 24, 7, 9)).astype(np.uint8)
    for _ in range(10):
        sx, zx = _draw(rng)
        sy, zy = (np.float32(sx * 2 / 63), int(rng.integers(0, 256))) if ties else _draw(rng)  # ties: x.5 sums
        stored = _run_op("QLinearGlobalAveragePool", {"x": x}, _params(x=(sx, zx), y=(sy, zy)), [2, 24, 1, 1],
                         order=["x", "x_scale", "x_zero", "y_scale", "y_zero"], channels_last=0)
        levels = qlinear_global_average_pool(_centered(x, zx), _grid(sx, zx), _grid(sy, zy))
        np.testing.assert_array_equal(levels.numpy(), stored.astype(np.float32) - zy)


class Kernels(nn.Module):
    """Every op here runs in a fused integer kernel: convolutions (plain, strided depthwise without a
    bias, 1x1) with and without ReLU, an add, a LeakyReLU and a sigmoid (lookup tables), a concat, a
    squeeze-and-excitation block (global average pooling, multiply) and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.grow = nn.Conv2d(8, 8, 1)
        self.side = nn.Conv2d(8, 4, 3, padding=1)
        self.mix = nn.Conv2d(12, 12, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(12, 4, 1), nn.Conv2d(4, 12, 1)
        self.project = nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(torch.relu(self.stem(x)))
        y = y + self.grow(y)
        m = self.mix(torch.cat([y, F.leaky_relu(self.side(y), 0.1)], dim=1))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(F.adaptive_avg_pool2d(m, 1)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.project(m * gate), 1), 1))


FUSED = {"QLinearConv": 8, "QLinearAdd": 1, "QLinearLeakyRelu": 1, "QLinearConcat": 1, "QLinearGlobalAveragePool": 2,
         "QLinearSigmoid": 1, "QLinearMul": 1, "QGemm": 1}
NO_VNNI = pytest.mark.skipif(not cpu_has_vnni(), reason="this CPU has no VNNI")
TARGETS = ["portable", pytest.param("vnni", marks=NO_VNNI)]
CONFIGS = {"W8A8": LayerQuantConfig(8, 8), "W8A8 shift": LayerQuantConfig(8, 8, scale="shift"),
           "W4A6 per tensor": LayerQuantConfig(4, 6, granularity="per_tensor"),
           "W6A7 shift": LayerQuantConfig(6, 7, scale="shift")}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("policy", CONFIGS)
def test_models_of_fused_kernels_are_bit_exact(policy, target, tmp_path, monkeypatch):
    config = CONFIGS[policy]
    torch.manual_seed(0)
    model = Kernels().eval()
    x = torch.randn(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    qmodel = quantize_model(model, dict.fromkeys(quantizable_layers(model), config), [x[:8]], target=target)
    path = export_onnx(qmodel, x[:1], tmp_path / "kernels.onnx", dynamic_batch=True)
    optimized = tmp_path / "optimized.onnx"
    output = onnxruntime_session(path, optimized_model_path=optimized).run(None, {"input": x.numpy()})[0]
    ops = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    assert {op: ops[op] for op in FUSED} == FUSED
    ties = []
    requantize = exact_module.requantize
    monkeypatch.setattr(exact_module, "requantize", lambda acc, multiplier, out: ties.append(
        int(((acc.float() * multiplier) % 1 == 0.5).sum())) or requantize(acc, multiplier, out))
    with torch.no_grad():
        expected = qmodel(x)
    np.testing.assert_array_equal(output, expected.numpy())
    if config.scale == "shift":  # many accumulators land exactly between two levels
        assert sum(ties) > 100
    with torch.no_grad():
        assert torch.equal(deployable_copy(qmodel, target)(x), expected)  # the export modules compute it too


def test_conv1d_and_linear_on_sequences(tmp_path):
    """Conv1d runs as a one-dimensional QLinearConv, a linear layer on [N, L, C] as an integer MatMul."""

    class Sequence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.mix, self.out = nn.Conv1d(4, 8, 5, padding=2), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.mix(torch.relu(self.conv(x)).transpose(1, 2))))

    model = Sequence().eval()
    x = torch.randn(8, 4, 32, generator=torch.Generator().manual_seed(2))
    qmodel = quantize_model(model, dict.fromkeys(quantizable_layers(model), LayerQuantConfig(8, 8)), [x])
    path = export_onnx(qmodel, x[:1], tmp_path / "sequence.onnx", dynamic_batch=True)
    optimized = tmp_path / "optimized.onnx"
    output = onnxruntime_session(path, optimized_model_path=optimized).run(None, {"input": x.numpy()})[0]
    ops = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    # ONNX Runtime runs a linear layer on [N, L, C] as MatMulIntegerToFloat (integer product,
    # float scale and bias), not QGemm (which takes 2-D inputs only)
    assert ops["QLinearConv"] == 1 and ops["MatMulIntegerToFloat"] == 2
    with torch.no_grad():
        np.testing.assert_array_equal(output, qmodel(x).numpy())


def test_gradient_path_and_switch_keep_fake_quantization(calib_data, example_model):
    """With a gradient recorded (QAT) the model computes torch's fake quantization and trains
    through it; exact_kernels(False) gives that float path in evaluation too."""
    qmodel = quantize_model(example_model, dict.fromkeys(quantizable_layers(example_model), LayerQuantConfig(8, 8)),
                            calib_data)
    x = calib_data[0]
    with torch.no_grad(), exact_kernels(False):
        float_path = qmodel(x)
    trained = qmodel(x)
    assert torch.allclose(trained, float_path) and trained.requires_grad
    trained.square().sum().backward()
    assert qmodel.stem.parametrizations.weight.original.grad.abs().sum() > 0
    with torch.no_grad():
        exact = qmodel(x)
    assert torch.allclose(exact, float_path, atol=float(qmodel.mpq_act.head.scale) * 4)


def test_float_layers_and_wide_tensors_stay_float(calib_data, example_model):
    """Nothing at 16 or 32 bits is computed by an integer kernel: the float path is unchanged."""
    configs = {name: LayerQuantConfig(16, 16) for name in quantizable_layers(example_model)}
    qmodel = quantize_model(example_model, configs, calib_data)
    with torch.no_grad():
        exact = qmodel(calib_data[0])
        with exact_kernels(False):
            assert torch.equal(exact, qmodel(calib_data[0]))
