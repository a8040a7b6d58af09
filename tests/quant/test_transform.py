import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from mpqsearch.quant import (
    ActFakeQuant,
    LayerQuantConfig,
    UntraceableModelWarning,
    analyze,
    collect_activation_stats,
    prepare,
    quant_range,
    quantizable_layers,
    quantize_model,
)


def _configs(model, weight_bits=8, act_bits=8, **options):
    return {name: LayerQuantConfig(weight_bits, act_bits, **options) for name in quantizable_layers(model)}


def _act_quantizers(qmodel):
    return {name: m for name, m in qmodel.named_modules() if isinstance(m, ActFakeQuant)}


def test_relu_outputs_are_quantized_unsigned(example_model, calib_data):
    sites = analyze(example_model).sites
    assert sites["block.conv"].unsigned and sites["up"].unsigned  # nn.ReLU module, torch.relu
    assert not sites["branch_a"].unsigned and not sites["head"].unsigned
    qmodel = quantize_model(example_model, _configs(example_model, 8, 4), calib_data)
    quantizer = qmodel.mpq_act.block__conv
    assert quantizer.unsigned
    out = quantizer(torch.linspace(-1, 10, 5000))
    levels = (out / quantizer.scale).round()
    assert levels.min() == 0 and levels.max() == 15  # 2^4 levels on [0, c]
    assert torch.allclose(quantizer.scale, quantizer.stats.max / 15)


def test_layers_feeding_add_or_concat_share_a_scale(example_model, calib_data):
    analysis = analyze(example_model)
    assert analysis.ties == [("stem", "block.depthwise"), ("branch_a", "branch_b")]
    qmodel = quantize_model(example_model, _configs(example_model, 8, 6), calib_data)
    # 7 layers, two pairs tied; the model input; the add; the mean head reads; stem's output before
    # its ReLU (its grid is signed: no int8 kernel folds the ReLU into it)
    assert len(_act_quantizers(qmodel)) == 9
    shared = qmodel.mpq_act.branch_a
    code = qmodel.code
    assert code.count("self.mpq_act.branch_a(") == 2 and code.count("self.mpq_act.stem(") == 2
    # the shared scale covers both tensors: it was calibrated on the larger of the two ranges
    stats = collect_activation_stats(example_model, calib_data)
    assert stats["branch_a"] is stats["branch_b"]
    assert torch.equal(shared.scale, stats["branch_a"].scale(6, signed=True))
    assert not shared.unsigned  # stem is after a ReLU but depthwise is not: signed


def test_tied_layers_must_agree(example_model, calib_data):
    configs = _configs(example_model)
    configs["branch_b"] = LayerQuantConfig(8, 6)
    with pytest.raises(ValueError, match="branch_a, branch_b .* act_bits branch_a=8, branch_b=6"):
        quantize_model(example_model, configs, calib_data)


class Stream(nn.Module):
    """A residual stream whose last add joins a layer's output and the model input, read by a layer."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.b1 = nn.Conv2d(4, 4, 3, padding=1)
        self.b2 = nn.Conv2d(4, 4, 3, padding=1)
        self.tail = nn.Conv2d(4, 3, 3, padding=1)
        self.out = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.head(x)
        y = y + self.b1(y)
        y = y + self.b2(torch.relu(y))
        return self.out(self.tail(y) + x)


def test_residual_stream_ties_through_chained_adds():
    assert analyze(Stream()).ties == [("head", "b1", "b2")]  # tail + model input: nothing to tie


def test_every_tensor_a_layer_reads_is_quantized():
    """Each add gets its own quantizer following its tied group (head's); b2 reads the first add
    through a ReLU, on the add's grid; tail(y) + x joins a layer and the model input: its own
    quantizer at tail's settings, signed (a model input may be negative)."""
    analysis = analyze(Stream())
    sites = {key: (s.node, s.follows, s.mode, s.unsigned, s.readers) for key, s in analysis.tensor_sites.items()}
    assert sites == {
        "<input:x>": ("x", None, "own", None, ("head",)),
        "<join:add>": ("add", "head", "own", False, ("b2",)),
        "<join:add_1>": ("add_1", "head", "own", False, ("tail",)),
        "<join:add_2>": ("add_2", "tail", "own", False, ("out",)),
    }
    assert analysis.regrids == {"relu": "<join:add>"}
    assert analysis.reads == {"head": "<input:x>", "b1": "head", "b2": "<join:add>", "tail": "<join:add_1>",
                              "out": "<join:add_2>"}


def _outputs(qmodel, names, x):
    """What the modules ``names`` of ``qmodel`` output on ``x``."""
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, (args[0], output))
        return hook
    handles = [qmodel.get_submodule(name).register_forward_hook(record(name)) for name in names]
    with torch.no_grad():
        qmodel(x)
    for handle in handles:
        handle.remove()
    return seen


def _on_grid(x, quantizer):
    levels = x / quantizer.scale
    low, high = quant_range(quantizer.bits, signed=not quantizer.unsigned, narrow=False)
    return torch.allclose(levels, levels.round(), atol=1e-3) and low <= levels.min() and levels.max() <= high


def test_join_outputs_are_quantized(example_model, calib_data, example_input):
    analysis = analyze(example_model)
    add, cat = analysis.tensor_sites["<join:add>"], analysis.tensor_sites["<join:cat>"]
    assert (add.mode, add.follows, add.unsigned, add.readers) == ("own", "stem", False, ("branch_a", "branch_b"))
    assert (cat.mode, cat.follows, cat.readers) == ("same_grid", "branch_a", ("up",))
    qmodel = quantize_model(example_model, _configs(example_model, 8, 6), calib_data)
    stats = collect_activation_stats(example_model, calib_data)
    # the add: its own quantizer at its tied group's bits, calibrated on the sum
    quantizer = qmodel.mpq_join.add
    assert (quantizer.bits, quantizer.unsigned) == (6, False)
    assert torch.equal(quantizer.scale, stats["<join:add>"].scale(6, signed=True))
    assert not torch.equal(quantizer.scale, qmodel.mpq_act.stem.scale)
    # the concat: branch_a's and branch_b's shared quantizer, not calibrated again, no value changed
    assert qmodel.mpq_grid.cat.quantizer is qmodel.mpq_act.branch_a
    assert stats["<join:cat>"] is stats["branch_a"]
    seen = _outputs(qmodel, ["mpq_join.add", "mpq_grid.cat"], example_input)
    assert _on_grid(seen["mpq_join.add"][1], quantizer)
    cat_in, cat_out = seen["mpq_grid.cat"]
    assert torch.equal(cat_in, cat_out) and _on_grid(cat_out, qmodel.mpq_act.branch_a)


def test_a_concat_of_an_add_requantizes_on_its_own_scale():
    """ESRGAN's dense block: the residual sum (its own scale) is concatenated with a conv's output
    (the tied group's scale); the concat gets its own scale and the group's stays its layers'."""
    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 4, 3, padding=1)
            self.res = nn.Conv2d(4, 4, 3, padding=1)
            self.grow = nn.Conv2d(4, 4, 3, padding=1)
            self.fuse = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            f = self.head(x)
            f = f + self.res(f)
            return self.fuse(torch.cat([f, nn.functional.leaky_relu(self.grow(f), 0.2)], dim=1))

    model = Dense().eval()
    analysis = analyze(model)
    assert analysis.ties == [("head", "res", "grow")]
    sites = {key: (site.mode, site.follows, site.readers) for key, site in analysis.tensor_sites.items()}
    assert sites == {"<input:x>": ("own", None, ("head",)), "<join:add>": ("own", "head", ("grow",)),
                     "<join:cat>": ("own", "head", ("fuse",))}
    calib = [torch.randn(2, 3, 8, 8)]
    stats = collect_activation_stats(model, calib)
    assert len({id(stats[key]) for key in ("head", "<join:add>", "<join:cat>")}) == 3
    qmodel = quantize_model(model, _configs(model, 8, 8), calib)
    assert torch.equal(qmodel.mpq_act.head.scale, stats["head"].scale(8, signed=True))
    assert _on_grid(_outputs(qmodel, ["mpq_join.cat"], calib[0])["mpq_join.cat"][1], qmodel.mpq_join.cat)


def test_model_input_is_quantized(example_model, calib_data, example_input):
    qmodel = quantize_model(example_model, _configs(example_model), calib_data)
    quantizer = qmodel.mpq_input.x
    largest = max(x.abs().max() for x in calib_data)
    assert (quantizer.bits, quantizer.unsigned) == (8, False)  # signed calibration data
    assert torch.allclose(quantizer.scale, largest / 127)
    assert _on_grid(_outputs(qmodel, ["stem"], example_input)["stem"][0], quantizer)
    images = [x.abs() for x in calib_data]  # non-negative: unsigned, all 2^b levels
    unsigned = quantize_model(example_model, _configs(example_model), images, input_bits=4).mpq_input.x
    assert (unsigned.bits, unsigned.unsigned) == (4, True)
    assert torch.allclose(unsigned.scale, largest / 15)
    assert quantize_model(example_model, _configs(example_model), calib_data, input_bits=32).mpq_input.x.bits == 32
    configs = _configs(example_model)
    configs["stem"] = LayerQuantConfig(32, 8)  # its only reader keeps float weights: the input stays float
    assert quantize_model(example_model, configs, calib_data).mpq_input.x.bits == 32
    with pytest.raises(ValueError, match="bits must be 2..16 or 32, got 1"):
        quantize_model(example_model, configs, calib_data, input_bits=1)


def test_layers_reading_quantized_tensors_add_biases_on_the_int32_grid(example_model, calib_data):
    qmodel = quantize_model(example_model, _configs(example_model, 4, 8), calib_data)
    for name, input_quantizer in {"stem": qmodel.mpq_input.x, "branch_a": qmodel.mpq_join.add}.items():
        layer = qmodel.get_submodule(name)
        scale = input_quantizer.scale * layer.parametrizations.weight[0].scale
        assert torch.equal(layer.bias, (layer.bias / scale).round() * scale)
        assert (layer.bias - example_model.get_submodule(name).bias).abs().max() <= scale.max() / 2
    assert "bias" in qmodel.head.parametrizations  # reads the quantized mean


def test_input_model_is_untouched(example_model, calib_data):
    before = {k: v.clone() for k, v in example_model.state_dict().items()}
    quantize_model(example_model, _configs(example_model, 3, 4), calib_data)
    after = example_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, ActFakeQuant) for m in example_model.modules())


def test_32_bits_everywhere_changes_nothing(example_model, example_input):
    qmodel = quantize_model(example_model, _configs(example_model, 32, 32))  # input_bits 8: no quantized reader
    assert torch.equal(qmodel(example_input), example_model(example_input))


def test_forward_and_backward(example_model, calib_data, example_input):
    qmodel = quantize_model(example_model, _configs(example_model, 4, 8), calib_data)
    qmodel.train()
    out = qmodel(example_input)
    assert out.shape == example_model(example_input).shape
    out.pow(2).sum().backward()
    for name, layer in quantizable_layers(qmodel).items():
        grad = layer.parametrizations.weight.original.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_quantization_error_falls_with_bits(example_model, calib_data, example_input):
    reference = example_model(example_input)
    errors = []
    for bits in (2, 4, 8, 16):
        qmodel = quantize_model(example_model, _configs(example_model, bits, max(bits, 4)), calib_data)
        errors.append((qmodel(example_input) - reference).pow(2).mean().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6


def test_cached_statistics_and_scales_reproduce_the_model(example_model, calib_data, example_input):
    configs = _configs(example_model, 5, 6, weight_clipping="mse", act_clipping="mse")
    direct = quantize_model(example_model, configs, calib_data)
    stats = collect_activation_stats(example_model, calib_data)
    scales = {}
    cached = quantize_model(example_model, configs, act_stats=stats, weight_scales=scales)
    assert len(scales) == 7
    again = quantize_model(example_model, configs, act_stats=stats, weight_scales=scales)
    assert torch.equal(direct(example_input), cached(example_input))
    assert torch.equal(direct(example_input), again(example_input))


def test_copies_of_a_prepared_template_reproduce_the_model_and_leave_it_as_it_was(
        example_model, calib_data, example_input):
    stats = collect_activation_stats(example_model, calib_data)
    template = prepare(example_model)
    low, high = _configs(example_model, 4, 4), _configs(example_model, 8, 8)
    first = quantize_model(example_model, low, act_stats=stats, template=template)
    second = quantize_model(example_model, high, act_stats=stats, template=template)
    assert torch.equal(first(example_input), quantize_model(example_model, low, act_stats=stats)(example_input))
    assert torch.equal(second(example_input), quantize_model(example_model, high, act_stats=stats)(example_input))
    assert first.mpq_act.head is not second.mpq_act.head and first.mpq_act.head.bits == 4
    assert first.mpq_grid.cat.quantizer is first.mpq_act.branch_a  # a copy keeps its ties
    assert all(q.observing and not q.stats.observed for q in template.quantizers.values())
    assert not any(parametrize.is_parametrized(layer) for layer in quantizable_layers(template.model).values())


def test_shift_scales_in_a_model(example_model, calib_data):
    qmodel = quantize_model(example_model, _configs(example_model, 6, 6, scale="shift"), calib_data)
    scales = [m.scale for m in _act_quantizers(qmodel).values()]
    scales += [layer.parametrizations.weight[0].scale for layer in quantizable_layers(qmodel).values()]
    for scale in scales:
        assert torch.equal(torch.log2(scale), torch.log2(scale).round())


def test_untraceable_model_falls_back_to_hooks(calib_data):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            if y.mean() > 0:  # data-dependent control flow: torch.fx cannot trace this
                y = y + 1
            return self.b(y) + y

    model = DataDependent().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qmodel = quantize_model(model, _configs(model, 8, 8), calib_data)
    relevant = [w for w in caught if issubclass(w.category, UntraceableModelWarning)]
    assert len(relevant) == 1 and "not tied" in str(relevant[0].message)
    x = calib_data[0]
    assert (qmodel(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    assert qmodel.b.act_quant.unsigned is False and qmodel.a.act_quant.unsigned is False  # a: before relu


def test_bad_inputs_name_what_is_wrong(example_model):
    with pytest.raises(KeyError, match="no quantizable layer named 'nope'"):
        quantize_model(example_model, {"nope": LayerQuantConfig()})
    with pytest.raises(ValueError, match="calib_data"):
        quantize_model(example_model, _configs(example_model))
    with pytest.raises(ValueError, match="empty"):
        quantize_model(example_model, _configs(example_model), [])
    stale = {k: v for k, v in collect_activation_stats(example_model, [torch.randn(1, 3, 32, 32)]).items()
             if not k.startswith("<")}  # statistics collected before model inputs and joins were quantized
    with pytest.raises(KeyError, match="no statistics for '<input:x>'"):
        quantize_model(example_model, _configs(example_model), act_stats=stale)
