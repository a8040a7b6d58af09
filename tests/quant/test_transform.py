import warnings

import pytest
import torch
from torch import nn

from mpqsearch.quant import (ActFakeQuant, LayerQuantConfig, UntraceableModelWarning, analyze,
                             collect_activation_stats, quantizable_layers, quantize_model)


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
    assert len(_act_quantizers(qmodel)) == 5  # 7 layers, two pairs tied
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


def test_residual_stream_ties_through_chained_adds():
    class Stream(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 4, 3, padding=1)
            self.b1 = nn.Conv2d(4, 4, 3, padding=1)
            self.b2 = nn.Conv2d(4, 4, 3, padding=1)
            self.tail = nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            y = self.head(x)
            y = y + self.b1(y)
            y = y + self.b2(torch.relu(y))
            return self.tail(y) + x

    assert analyze(Stream()).ties == [("head", "b1", "b2")]  # tail + model input: nothing to tie


def test_input_model_is_untouched(example_model, calib_data):
    before = {k: v.clone() for k, v in example_model.state_dict().items()}
    quantize_model(example_model, _configs(example_model, 3, 4), calib_data)
    after = example_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, ActFakeQuant) for m in example_model.modules())


def test_32_bits_everywhere_changes_nothing(example_model, example_input):
    qmodel = quantize_model(example_model, _configs(example_model, 32, 32))
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
