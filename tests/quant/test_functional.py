import math

import pytest
import torch

from mpqsearch.quant import clip_values, fake_quantize, quant_range, scale_from_clip
from mpqsearch.quant.modules import weight_scale
from mpqsearch.quant.spec import LayerQuantConfig


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "gaussian": torch.randn(16, 64, generator=gen),
        "laplace_outliers": (torch.distributions.Laplace(0.0, 1.0).sample((16, 64))
                             * torch.linspace(0.1, 3, 16)[:, None]),
        "ramp": torch.linspace(-1, 1, 16 * 64).reshape(16, 64),
        "sine": torch.sin(torch.arange(16 * 64, dtype=torch.float32) / 7).reshape(16, 64),
    }


def _weight_mse(w, bits, clipping="max", kind="product", granularity="per_channel"):
    config = LayerQuantConfig(bits, 8, kind, granularity, clipping)
    scale = weight_scale(w, config, 0)
    q = fake_quantize(w, scale, bits, True, 0 if granularity == "per_channel" else None)
    return (q - w).pow(2).mean().item()


@pytest.mark.parametrize("name", list(_tensors()))
@pytest.mark.parametrize("kind", ["product", "shift"])
@pytest.mark.parametrize("clipping", ["max", "mse", "percentile"])
def test_error_falls_as_bits_rise(name, kind, clipping):
    w = _tensors()[name]
    errors = [_weight_mse(w, b, clipping, kind) for b in range(2, 17)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < errors[0] / 1000


@pytest.mark.parametrize("name", list(_tensors()))
def test_8bit_per_channel_error_within_half_step(name):
    w = _tensors()[name]
    scale = weight_scale(w, LayerQuantConfig(8, 8, weight_clipping="max"), 0)
    q = fake_quantize(w, scale, 8, True, 0)
    assert torch.all((q - w).abs() <= scale[:, None] / 2 * (1 + 1e-5))
    # max clipping: the largest magnitude of each channel is exactly the top level
    assert torch.allclose(w.abs().amax(1), scale * 127, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("signed", [True, False])
def test_shift_scales_are_exact_powers_of_two(bits, signed):
    clip = torch.tensor([0.003, 0.7, 1.0, 5.5, 300.0])
    scale = scale_from_clip(clip, bits, signed, "shift")
    exponent = torch.log2(scale)
    assert torch.equal(exponent, exponent.round())
    # seed 004: fl = b - 1 - ceil(log2 c) for signed tensors
    if signed:
        expected = [2.0 ** -(bits - 1 - math.ceil(math.log2(c))) for c in clip.tolist()]
        assert scale.tolist() == expected


@pytest.mark.parametrize("name", list(_tensors()))
@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("kind", ["product", "shift"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_mse_clipping_never_worse_than_max(name, bits, kind, granularity):
    w = _tensors()[name]
    assert _weight_mse(w, bits, "mse", kind, granularity) <= _weight_mse(w, bits, "max", kind, granularity)


def test_mse_clipping_helps_heavy_tails_at_low_bits():
    w = _tensors()["laplace_outliers"]
    assert _weight_mse(w, 3, "mse") < 0.8 * _weight_mse(w, 3, "max")


def test_percentile_clip_is_below_max():
    rows = torch.randn(4, 10000)
    assert torch.all(clip_values(rows, 8, True, "percentile", percentile=99.0) < rows.abs().amax(1))


def test_32_bits_returns_tensor_unchanged():
    x = torch.randn(5, 5)
    assert fake_quantize(x, torch.tensor(0.1), 32, True) is x


def test_unsigned_range_uses_all_levels():
    assert quant_range(4, signed=False) == (0, 15)
    assert quant_range(4, signed=True) == (-7, 7)
    assert quant_range(4, signed=True, narrow=False) == (-8, 7)
    x = torch.linspace(0, 1.5, 1000)
    q = fake_quantize(x, scale_from_clip(torch.tensor(1.5), 4, False), 4, False)
    assert q.unique().numel() == 16 and q.min() == 0


@pytest.mark.parametrize("bits, signed, narrow", [(8, True, True), (8, True, False), (8, False, False),
                                                  (4, True, True), (2, True, False), (16, True, True)])
@pytest.mark.parametrize("scale", [0.01, 0.0123456, 2.0**-5, 1 / 7, 0.3])
def test_no_grad_path_equals_torchs_kernels_bit_for_bit(bits, signed, narrow, scale):
    s = torch.tensor(scale)
    gen = torch.Generator().manual_seed(bits)
    ties = (torch.arange(-300, 300, dtype=torch.float32) + 0.5) * s   # halfway between levels
    values = torch.cat([ties, torch.randn(5000, generator=gen) * scale * 2 ** bits])
    qmin, qmax = quant_range(bits, signed, narrow)
    zero = torch.zeros((), dtype=torch.int32)
    assert torch.equal(fake_quantize(values, s, bits, signed, narrow=narrow),
                       torch.fake_quantize_per_tensor_affine(values, s, zero, qmin, qmax))
    weights = torch.randn(6, 4, 3, 3, generator=gen)
    scales = torch.rand(4, generator=gen) * scale + scale / 10
    zeros = torch.zeros(4, dtype=torch.int32)
    assert torch.equal(fake_quantize(weights, scales, bits, signed, axis=1, narrow=narrow),
                       torch.fake_quantize_per_channel_affine(weights, scales, zeros, 1, qmin, qmax))


def test_straight_through_gradient():
    x = torch.tensor([-2.0, -0.3, 0.2, 0.9, 3.0], requires_grad=True)
    fake_quantize(x, torch.tensor(1.0 / 7), 4, True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # zero outside the clip range [-1, 1]


def test_unknown_options_are_errors():
    with pytest.raises(ValueError, match="clipping"):
        clip_values(torch.randn(2, 3), 4, True, "median")
    with pytest.raises(ValueError, match="scale kind"):
        scale_from_clip(torch.tensor(1.0), 4, True, "log")
    with pytest.raises(ValueError, match="weight_bits"):
        LayerQuantConfig(weight_bits=1)
    with pytest.raises(ValueError, match="act_bits"):
        LayerQuantConfig(act_bits=8.0)


def test_mse_clipping_equals_the_candidate_by_candidate_search():
    """The vectorized search picks what trying each fraction of MSE_GRID in turn picks."""
    from mpqsearch.quant.functional import MSE_GRID

    rows = torch.randn(6, 300, generator=torch.Generator().manual_seed(7)) ** 3
    for bits, signed in ((3, True), (8, True), (4, False)):
        top = rows.abs().amax(dim=1) if signed else rows.clamp_min(0).amax(dim=1)
        errors = torch.stack([(fake_quantize(rows, scale_from_clip(top * f, bits, signed), bits, signed, axis=0)
                               - rows).pow(2).mean(dim=1) for f in MSE_GRID.tolist()])
        expected = top * MSE_GRID[errors.argmin(dim=0)]
        assert torch.allclose(clip_values(rows, bits, signed, "mse"), expected)


def test_weight_scales_are_cached_by_content():
    from mpqsearch.quant import modules

    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(8))
    config = LayerQuantConfig(4, 8)
    first = weight_scale(weight, config, 0)
    key = next(reversed(modules._scale_cache))
    assert torch.equal(modules._scale_cache[key], first)
    assert torch.equal(weight_scale(weight.clone(), config, 0), first)  # same content: from the cache
    changed = weight_scale(weight * 2, config, 0)
    assert torch.allclose(changed, 2 * first)
