"""The ONNX QDQ export computes what the fake-quant model computes, in ONNX Runtime too.

Tolerance: ONNX Runtime rounds differently from torch only at rounding boundaries
(``x / s`` against ``x * (1/s)``, int32 accumulation, the fused kernels' float
requantization), so a few activations may land one level away. On these models that moves the
output by at most one output quantization step, on well under 2 % of its elements (measured:
at most 3 of 640, in the 16-bit policy); a model kept in float differs by float summation order
only. (The int32 biases of layers reading quantized tensors are in the fake-quant model too.)
"""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from mpqsearch.quant import ActFakeQuant, LayerQuantConfig, WeightFakeQuant, quantizable_layers, quantize_model
from mpqsearch.quant.export import deployable_copy, export_onnx, model_target, onnxruntime_session, weight_container
from mpqsearch.quant.modules import BiasFakeQuant, SameGridQuant

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
    assert not any(isinstance(m, (ActFakeQuant, WeightFakeQuant, BiasFakeQuant, SameGridQuant)) for m in copy.modules())
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
        dtype, zero = weight_container(policy[name].weight_bits, model_target(qmodel), quantizer.qmax)
        assert tensors[key].dtype == {torch.int8: np.int8, torch.uint8: np.uint8, torch.int16: np.int16}[dtype]
        stored = tensors[key].astype(np.int32) - zero
        np.testing.assert_array_equal(stored, levels)
        assert np.abs(stored).max() <= 2 ** (policy[name].weight_bits - 1) - 1
    # 8 bits: int8, within +-64 when quantized for portable, full range for vnni (weight_container)
    assert tensors["head.parametrizations.weight.0.levels"].dtype == np.int8
    # each quantized activation is one Q/DQ family with its own scale; 32-bit "up" has none; the
    # model input and the add have their own, the concat reuses branch_a's (tied with branch_b)
    act_scales = {n for n in tensors if n.startswith("mpq_")}
    assert act_scales == {"mpq_act.stem.scale", "mpq_act.block__conv.scale", "mpq_act.branch_a.scale",
                          "mpq_act.head.scale", "mpq_input.x.scale", "mpq_join.add.scale"}
    assert np.isclose(tensors["mpq_act.head.scale"], float(qmodel.mpq_act.head.scale))
    zero_points = {node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                   for node in model.graph.node if node.op_type == "Constant"}
    q_zero = {node.input[1]: zero_points[node.input[2]] for node in model.graph.node
              if node.op_type == "QuantizeLinear" and node.input[1] in act_scales}
    types = {scale: (zero.dtype, int(zero)) for scale, zero in q_zero.items()}
    assert types["mpq_act.block__conv.scale"] == (np.uint8, 0)  # 5 bits after ReLU
    assert types["mpq_act.branch_a.scale"] == (np.int16, 0)  # 16 bits, signed
    assert types["mpq_act.head.scale"] == (np.uint8, 128)  # 7 bits, signed: int8 levels shifted into uint8


def test_bits_below_the_container_are_clipped_exactly(tmp_path):
    layer = nn.Conv2d(2, 3, 1)
    model = nn.Sequential(layer).eval()
    x = torch.randn(1, 2, 4, 4)
    qmodel = quantize_model(model, {"0": LayerQuantConfig(8, 5)}, [x], input_bits=32)
    big = torch.randn(8, 2, 4, 4) * 10  # far outside the calibrated range: saturates
    path = export_onnx(qmodel, x, tmp_path / "clip.onnx", dynamic_batch=True)
    levels = _ort_run(path, big) / float(qmodel.mpq_act.get_submodule("0").scale)
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    assert levels.min() == pytest.approx(-16) and levels.max() == pytest.approx(15)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Clip") == 1 and ops.count("QuantizeLinear") == 2


def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            flags = set(next((line for line in info if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni"})


@pytest.mark.parametrize("weight_bits,quantized_for,target", [
    (7, "portable", "portable"), (8, "vnni", "portable"), (8, "portable", "portable"),
    pytest.param(8, "vnni", "vnni", marks=pytest.mark.skipif(not _cpu_has_vnni(), reason="this CPU has no VNNI")),
])
def test_full_range_8bit_products_do_not_saturate(weight_bits, quantized_for, target, tmp_path):
    """Activations near 255 levels times weights near the largest level: two such products
    overflow the int16 that ONNX Runtime's u8s8 kernels add them in on x86 CPUs without VNNI.
    The exported layer still computes the fake-quant model's numbers (to one output level),
    on any CPU: full-range 8-bit weights in a portable file are uint8 (u8u8 kernels), 8-bit
    weights quantized for portable stay within +-64 (int8, u8s8 kernels, 255 * 64 * 2 fits);
    the ``vnni`` target's full-range int8 8-bit weights do so on CPUs with VNNI."""
    generator = torch.Generator().manual_seed(0)
    layer = nn.Conv2d(16, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.copy_(0.5 + 0.5 * torch.rand(layer.weight.shape, generator=generator))
        layer.bias.zero_()
    model = nn.Sequential(layer).eval()
    x = 0.9 + 0.1 * torch.rand(4, 16, 8, 8, generator=generator)
    qmodel = quantize_model(model, {"0": LayerQuantConfig(weight_bits, 8)}, [x], target=quantized_for)
    path = export_onnx(qmodel, x[:1], tmp_path / "conv.onnx", dynamic_batch=True, target=target)
    levels = torch.from_numpy(_onnx_parts(path)[1]["0.parametrizations.weight.0.levels"].copy())
    qmax = qmodel.get_submodule("0").parametrizations.weight[0].qmax
    assert levels.dtype == weight_container(weight_bits, target, qmax)[0]
    assert (levels.dtype == torch.uint8) == ((quantized_for, target) == ("vnni", "portable"))
    assert _optimized_ops(path, tmp_path).count("QLinearConv") == 1
    with torch.no_grad():
        expected = qmodel(x).numpy()
    step = float(qmodel.mpq_act.get_submodule("0").scale)
    assert np.abs(_ort_run(path, x) - expected).max() <= step * (1 + 1e-5)


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


@pytest.mark.parametrize(("weight_bits", "act_bits", "input_bits", "fused"),
                         [(8, 8, 8, 3), (4, 6, 8, 3), (8, 8, 32, 2), (16, 16, 8, 0), (32, 8, 8, 0)])
def test_onnxruntime_fuses_8bit_convs(weight_bits, act_bits, input_bits, fused, calib_data, tmp_path):
    """Every conv reads and writes 8-bit (or narrower) tensors, conv1 the quantized model input:
    ONNX Runtime runs them as QLinearConv; with a float input conv1 runs in float. Wider layers,
    and float weights behind quantized inputs, stay float."""
    model = Chain().eval()
    configs = {name: LayerQuantConfig(weight_bits, act_bits) for name in quantizable_layers(model)}
    qmodel = quantize_model(model, configs, calib_data, input_bits=input_bits)
    path = export_onnx(qmodel, calib_data[0][:1], tmp_path / "chain.onnx")
    ops = _optimized_ops(path, tmp_path)
    assert ops.count("QLinearConv") == fused
    assert ops.count("Conv") + ops.count("FusedConv") == 3 - fused


def _fused(path, tmp_path):
    """The optimized model's QLinear* op counts, and the layers running as QLinearConv (named
    by their weight initializers)."""
    optimized = tmp_path / "optimized.onnx"
    onnxruntime_session(path, optimized_model_path=optimized)
    nodes = onnx.load(str(optimized)).graph.node
    ops = ("QLinearConv", "QLinearAdd", "QLinearConcat", "QGemm", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearMul",
           "QLinearGlobalAveragePool")
    counts = {op: sum(n.op_type == op for n in nodes) for op in ops}
    suffix = ".parametrizations.weight.0.levels"
    convs = {name.removesuffix(suffix) for n in nodes if n.op_type == "QLinearConv" for name in n.input
             if name.endswith(suffix)}
    return counts, convs


@pytest.mark.parametrize("input_bits", [8, 32])
def test_example_model_fusion(input_bits, example_model, calib_data, tmp_path):
    """The residual add and the concat are quantized, so the convs reading them fuse and they
    run as QLinearAdd and QLinearConcat (before: only block.depthwise fused; block.conv read a
    signed tensor read by two nodes, which ONNX Runtime keeps int8 and does not fuse). stem's ReLU
    output lies on the signed grid it shares with block.depthwise, which no int8 kernel folds a
    ReLU into: its output is quantized before the ReLU too, so it runs as QLinearConv when it
    reads the 8-bit input (with a float input it runs in float). up is a ConvTranspose (no int8
    kernel); head reads the quantized mean and runs as QGemm."""
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data, input_bits=input_bits)
    counts, convs = _fused(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"), tmp_path)
    stem = {"stem"} if input_bits == 8 else set()
    assert convs == {"block.conv", "block.depthwise", "branch_a", "branch_b"} | stem
    assert {op: n for op, n in counts.items() if n} == {"QLinearConv": 4 + len(stem), "QLinearAdd": 1,
                                                        "QLinearConcat": 1, "QGemm": 1}


def test_biases_behind_quantized_inputs_are_int32(example_model, calib_data, tmp_path):
    """A layer with quantized weights reading a quantized tensor (every layer: stem reads the
    quantized model input, head the quantized mean) adds an int32 bias at s_in * s_w, in the
    fake-quant model as in the file."""
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data)
    _, tensors = _onnx_parts(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"))
    assert "head.bias" not in tensors and "stem.bias" not in tensors
    input_scales = {"stem": qmodel.mpq_input.x.scale, "block.conv": qmodel.mpq_act.stem.scale,
                    "branch_a": qmodel.mpq_join.add.scale, "head": qmodel.mpq_tensor.mean.scale}
    for name, input_scale in input_scales.items():
        layer = qmodel.get_submodule(name)
        prefix = f"{name}.parametrizations.bias.0"
        levels, scale = tensors[f"{prefix}.levels"], tensors[f"{prefix}.scale"]
        assert levels.dtype == np.int32
        np.testing.assert_array_equal(scale, float(input_scale) * layer.parametrizations.weight[0].scale.numpy())
        restored = levels.astype(np.float32) * scale  # what DequantizeLinear computes
        np.testing.assert_array_equal(restored, layer.bias.detach().numpy())  # exactly the fake-quant bias
        original = example_model.get_submodule(name).bias.detach().numpy()
        assert np.abs(restored - original).max() <= scale.max() / 2


def test_wide_biases_do_not_overflow(example_model, calib_data, tmp_path):
    qmodel = quantize_model(example_model, POLICIES["W16A16"], calib_data)
    _, tensors = _onnx_parts(export_onnx(qmodel, calib_data[0][:1], tmp_path / "model.onnx"))
    for name in ("block.conv", "block.depthwise"):
        prefix = f"{name}.parametrizations.bias.0"
        restored = tensors[f"{prefix}.levels"] * tensors[f"{prefix}.scale"]
        original = example_model.get_submodule(name).bias.detach().numpy()
        np.testing.assert_allclose(restored, original, rtol=1e-6, atol=1e-9)


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
    with pytest.raises(ValueError, match="unknown export target 'arm'; choose one of portable, vnni"):
        export_onnx(qmodel, calib_data[0][:1], tmp_path / "d.onnx", target="arm")


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


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)


class SRResNetLike(nn.Module):
    """SRGAN's generator in miniature: conv-PReLU head, residual blocks (conv, PReLU, conv, plus
    the skip), a conv and the long skip, a conv-PReLU-pixel-shuffle upsampler, the tail conv and
    a bicubic skip from the input."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, channels, 5, padding=2), nn.PReLU())
        self.blocks = nn.ModuleList(nn.ModuleDict({"conv1": nn.Conv2d(channels, channels, 3, padding=1),
                                                   "act": nn.PReLU(),
                                                   "conv2": nn.Conv2d(channels, channels, 3, padding=1)})
                                    for _ in range(2))
        self.body = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PReLU(), nn.PixelShuffle(2))
        self.tail = nn.Conv2d(channels, 3, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = residual = self.head(x)
        for block in self.blocks:
            residual = residual + block["conv2"](block["act"](block["conv1"](residual)))
        features = features + self.body(residual)
        return self.tail(self.up(features)) + _bicubic(x)


class DenseLike(nn.Module):
    """ESRGAN's dense block in miniature: each conv reads the concat of the trunk and all
    LeakyReLU outputs before it, the fuse conv's output comes back scaled by 0.2, twice."""

    def __init__(self, channels: int = 8, growth: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "grow0": nn.Conv2d(channels, growth, 3, padding=1),
            "grow1": nn.Conv2d(channels + growth, growth, 3, padding=1),
            "fuse": nn.Conv2d(channels + 2 * growth, channels, 1)}) for _ in range(2))
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.head(x)
        for block in self.blocks:
            features = trunk
            for name in ("grow0", "grow1"):
                features = torch.cat([features, nn.functional.leaky_relu(block[name](features), 0.2)], dim=1)
            trunk = trunk + 0.2 * block["fuse"](features)
        return self.tail(trunk) + x


def _sr_images(count: int, size: int) -> torch.Tensor:
    """Smooth non-negative images in [0, 1], as SR models see."""
    noise = torch.rand(count, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(4))
    return nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("model", "fused", "joins"), [
    # every conv runs as QLinearConv: the PReLU convs' outputs are quantized before the PReLU
    # (no int8 kernel folds a PReLU), which runs in float between DQ and Q; the tail reads through
    # the pixel shuffle; the block adds and the long skip run as QLinearAdd (the bicubic skip is
    # the model output: float)
    (SRResNetLike, {"head.0", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "body", "up.0",
                    "tail"}, {"QLinearAdd": 3, "QLinearConcat": 0, "QLinearLeakyRelu": 0}),
    # every conv runs as QLinearConv, the LeakyReLUs as QLinearLeakyRelu on the integers; head
    # reads the unsigned 8-bit input; the first block's concats stay on the trunk's grid, the
    # second's requantize the first block's sum
    (DenseLike, {"head", "blocks.0.grow0", "blocks.0.grow1", "blocks.0.fuse", "blocks.1.grow0", "blocks.1.grow1",
                 "blocks.1.fuse", "tail"}, {"QLinearAdd": 0, "QLinearConcat": 4, "QLinearLeakyRelu": 4}),
])
def test_super_resolution_look_alikes(model, fused, joins, tmp_path):
    model = model().eval()
    images = _sr_images(6, 24)
    qmodel = quantize_model(model, dict.fromkeys(quantizable_layers(model), LayerQuantConfig(8, 8)), [images[:4]])
    assert qmodel.mpq_input.x.unsigned
    counts, convs = _fused(export_onnx(qmodel, images[:1], tmp_path / "model.onnx", dynamic_batch=True), tmp_path)
    assert convs == fused
    assert {op: counts[op] for op in joins} == joins
    with torch.no_grad():
        expected = qmodel(images).numpy()
    diff = np.abs(_ort_run(tmp_path / "model.onnx", images) - expected)
    step = float(qmodel.mpq_act.tail.scale)
    float_error = 1e-6 * np.abs(expected).max()  # the float bicubic skip added to the output
    assert diff.max() <= step + float_error and (diff > step / 2).mean() < 0.02


def test_vnni_files_warn_on_cpus_without_vnni(example_model, calib_data, tmp_path, monkeypatch):
    from mpqsearch.quant import qdq
    from mpqsearch.quant.spec import cpu_has_vnni

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_vnni(info) is False
    info.write_text("flags\t\t: fpu avx2 avx_vnni\n")
    assert cpu_has_vnni(info) is True
    assert cpu_has_vnni(tmp_path / "missing") is None
    qmodel = quantize_model(example_model, POLICIES["W8A8"], calib_data, target="vnni")
    monkeypatch.setattr(qdq, "cpu_has_vnni", lambda: False)
    with pytest.warns(qdq.NoVNNIWarning, match="compute wrong numbers on this CPU"):
        export_onnx(qmodel, calib_data[0][:1], tmp_path / "vnni.onnx", target="vnni")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_onnx(qmodel, calib_data[0][:1], tmp_path / "portable.onnx", target="portable")
    assert model_target(qmodel) == "vnni"
    assert model_target(quantize_model(example_model, POLICIES["W8A8"], calib_data, target="portable")) == "portable"
