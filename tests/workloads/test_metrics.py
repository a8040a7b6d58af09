import math

import pytest
import torch
from skimage.metrics import structural_similarity

from mpqsearch.workloads import data
from mpqsearch.workloads.metrics import mean_metric, rgb_to_y, sr_metric, ssim, top1

Y_PER_UNIT = 65.481 + 128.553 + 24.966  # Y change of a grey step of 1.0 in all three channels


def _grey(value: float, size: int = 20) -> torch.Tensor:
    return torch.full((1, 3, size, size), value, dtype=torch.float64)  # float64: exact hand values


def test_y_of_pure_colours_follows_bt601():
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1, 1], [0, 0, 0]]).view(5, 3, 1, 1)
    assert rgb_to_y(colours).flatten().tolist() == pytest.approx([81.481, 144.553, 40.966, 235.0, 16.0])


def test_psnr_of_a_constant_error():
    scores = sr_metric(2)(_grey(0.51), _grey(0.5))
    assert scores["psnr"].shape == (1,)
    assert scores["psnr"].item() == pytest.approx(20 * math.log10(255 / (0.01 * Y_PER_UNIT)), abs=1e-6)


def test_border_of_scale_pixels_is_ignored():
    target = _grey(0.5)
    output = target.clone()
    output[..., :2, :] = 1.0  # errors in the two-pixel border only ...
    output[..., :, -2:] = 0.0
    assert sr_metric(2)(output, target)["psnr"].item() == math.inf
    assert sr_metric(1)(output, target)["psnr"].item() < 20
    output[..., 10, 10] = 0.6  # ... and one interior pixel of the 16x16 that remain
    expected = 10 * math.log10(255**2 / ((0.1 * Y_PER_UNIT) ** 2 / 256))
    assert sr_metric(2)(output, target)["psnr"].item() == pytest.approx(expected, abs=1e-6)


def test_outputs_are_clamped_to_the_unit_range():
    scores = sr_metric(2)(torch.cat([_grey(1.5), _grey(-0.2)]), torch.cat([_grey(1.0), _grey(0.0)]))
    assert scores["psnr"].tolist() == [math.inf, math.inf]
    assert scores["ssim"].tolist() == pytest.approx([1.0, 1.0])


def test_ssim_of_identical_images_is_one():
    image = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    assert sr_metric(2)(image, image)["ssim"].tolist() == pytest.approx([1.0, 1.0])


def test_ssim_matches_scikit_image():
    lr, hr = data.eval_pairs("test")[0]
    noisy = torch.rand(1, 1, 64, 48, generator=torch.Generator().manual_seed(0)) * 255
    pairs = [(rgb_to_y(data.resize_bicubic(lr, 2)), rgb_to_y(hr)), (noisy, (noisy + 20).clamp(0, 255))]
    for a, b in pairs:
        expected = structural_similarity(a[0, 0].double().numpy(), b[0, 0].double().numpy(), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(a, b).item() == pytest.approx(expected, abs=1e-9)


def test_top1_per_sample():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert top1(logits, torch.tensor([1, 2, 2]))["top1"].tolist() == [1.0, 0.0, 1.0]


def test_mean_metric_averages_over_samples_not_batches():
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    pairs = [(logits[:1], torch.tensor([0])), (logits[1:], torch.tensor([1, 1]))]
    assert mean_metric(lambda x: x, pairs, top1) == {"top1": pytest.approx(1 / 3)}
