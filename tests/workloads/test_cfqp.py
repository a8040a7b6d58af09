import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpqsearch import Policy
from mpqsearch.trials.evaluate import Evaluator
from mpqsearch.workloads import Workload, data, get_workload, models
from mpqsearch.workloads.cfqp import cfqp_calibration, cfqp_workload
from mpqsearch.workloads.training import train_workload


class Brighten(nn.Module):
    """A stand-in SR model: nearest x2 upscaling times 1.5 (so part of its output exceeds 1)."""

    def forward(self, x):
        return 1.5 * F.interpolate(x, scale_factor=2, mode="nearest")


class Constant(nn.Module):
    """An SR model whose output ignores its input."""

    def forward(self, x):
        return torch.full((x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]), 0.25)


def _images(n=2, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, size, size, generator=gen) for _ in range(n)]


def test_views_are_the_inputs_the_clamped_outputs_and_their_downscales_flipped():
    images = _images()
    lr, hr = cfqp_calibration(Brighten(), images)
    assert lr.shape == (2 * 2 * 4, 3, 8, 8) and hr.shape == (2 * 4, 3, 16, 16)
    output = (1.5 * F.interpolate(images[0], scale_factor=2, mode="nearest")).clamp(0, 1)
    assert torch.equal(hr[0:1], output) and torch.equal(hr[1:2], output.flip(-1))
    assert torch.equal(hr[2:3], output.flip(-2)) and torch.equal(hr[3:4], output.flip(-2, -1))
    assert torch.equal(lr[0:1], images[0])  # the plain calibration images stay in the set
    assert torch.equal(lr[4:5], data.resize_bicubic(output, 0.5))  # input views of both images come first
    assert hr.max() == 1.0 and lr.min() >= 0.0


def test_new_views_come_from_the_model_outputs_only():
    images = _images(n=1)
    hr, lr = cfqp_calibration(Constant(), images, sources=("output", "downscaled"), flips=False)
    assert torch.all(hr == 0.25) and torch.allclose(lr, torch.full_like(lr, 0.25))


def test_calibration_is_deterministic_and_keeps_the_model_mode():
    model = models.ClippedESPCN().train()
    first = cfqp_calibration(model, _images(size=12))
    second = cfqp_calibration(model, _images(size=12))
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_bad_sources_and_non_sr_models_are_refused():
    with pytest.raises(ValueError, match="sources.*'blur'"):
        cfqp_calibration(Brighten(), _images(), sources=("input", "blur"))
    with pytest.raises(ValueError, match=r"input \(1, 3, 8, 8\) gave output \(1, 3, 64\)"):
        cfqp_calibration(nn.Flatten(2), _images())
    with pytest.raises(ValueError, match="item 0 is not an image batch"):
        cfqp_calibration(Brighten(), [torch.rand(3, 8, 8)])


def _tiny_sr_workload() -> Workload:
    images = _images(n=2, size=12, seed=3)
    return Workload(name="tiny-sr", task="super-resolution", build_model=lambda: models.ClippedESPCN().eval(),
                    example_input=images[0], calib_data=images,
                    eval_data=[(x, F.interpolate(x, scale_factor=2, mode="bicubic")) for x in _images(seed=4)],
                    metric=lambda out, target: {"l1": (out - target).abs().flatten(1).mean(1)},
                    directions={"l1": "minimize"})


def test_cfqp_workload_gets_its_own_calibration_statistics_and_cache_entry(tmp_path):
    plain = _tiny_sr_workload()
    augmented = cfqp_workload(plain)
    assert augmented.name == plain.name and augmented.eval_data is plain.eval_data
    assert "CFQP" in augmented.description and [x.shape[0] for x in augmented.calib_data] == [16, 8]
    first, second = Evaluator(plain, latency="none", cache_dir=tmp_path), Evaluator(augmented, latency="none",
                                                                                   cache_dir=tmp_path)
    assert first.cache.path != second.cache.path
    assert first.act_stats["<input:x>"].batches == 2 and second.act_stats["<input:x>"].batches == 2
    assert second.act_stats["<input:x>"].samples.numel() > first.act_stats["<input:x>"].samples.numel()


def test_clip_free_model_has_the_same_weights_and_the_same_clamped_output():
    clipped = models.ClippedESPCN().eval()
    with torch.no_grad():
        clipped.upsampler[0].bias.add_(0.5)  # push outputs above 1, where the clip acts
        free = clipped.without_clipping()
        x = _images(n=1, size=12)[0]
        out_clipped, out_free = clipped(x), free(x)
    assert isinstance(clipped.upsampler[1], nn.Hardtanh) and isinstance(free.upsampler[1], nn.ReLU)
    pairs = zip(clipped.state_dict().values(), free.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert out_free.max() > 1 and torch.equal(out_free.clamp(0, 1), out_clipped)


def test_clipped_espcn_starts_as_nearest_neighbour_upscaling_and_trains_deterministically(tmp_path):
    x = _images(n=1, size=12)[0]
    with torch.no_grad():
        assert torch.equal(models.ClippedESPCN()(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    first = train_workload("sr-espcn-clip-x2", steps=2, seed=1, out=tmp_path / "a.pt", progress=False)
    second = train_workload("sr-espcn-clip-x2", steps=2, seed=1, out=tmp_path / "b.pt", progress=False)
    state, again = torch.load(first), torch.load(second)
    assert all(torch.equal(state[k], again[k]) for k in state)


@pytest.fixture(scope="module")
def sr_evaluators():
    """The clipped and clip-free workloads on the committed weights, each with plain and CFQP
    calibration, on the ``vnni`` target: full-range 8-bit weights, the numerics the CFQP paper
    measures (the ``portable`` target's +-64 weight range costs this model about 1 dB at W8A8,
    docs/numerics.md; the integer kernels are computed exactly on any CPU)."""
    torch.set_num_threads(2)
    clipped, clip_free = get_workload("sr-espcn-clip-x2"), get_workload("sr-espcn-clipfree-x2")
    plain_free = dataclasses.replace(clip_free, calib_data=clipped.calib_data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPQSEARCH_TARGET", "vnni")
        return {("clipped", "plain"): Evaluator(clipped, latency="none"),
                ("clipped", "cfqp"): Evaluator(cfqp_workload(clipped), latency="none"),
                ("free", "plain"): Evaluator(plain_free, latency="none"),
                ("free", "cfqp"): Evaluator(clip_free, latency="none")}


def test_committed_clipped_espcn_beats_bicubic_and_loses_nothing_without_its_clip(sr_evaluators):
    clipped, free = sr_evaluators["clipped", "plain"], sr_evaluators["free", "cfqp"]
    assert clipped.reference["psnr"] >= clipped.workload.baselines["psnr"] + 0.5
    assert free.reference == pytest.approx(clipped.reference, abs=1e-9)


def test_at_w8a8_the_clip_free_model_on_its_cfqp_set_quantizes_as_well_as_the_clipped_one(sr_evaluators):
    """Measured (benchmarks/cfqp.py): all four W8A8 PSNRs lie within 0.011 dB (clipped, plain
    calibration: 32.2415 dB; clip-free, CFQP: 32.2325 dB); the clip only bounds the output's range."""
    psnr = {key: evaluator.evaluate(Policy.uniform(evaluator.space, 8, 8), measure_latency=False).metrics["psnr"]
            for key, evaluator in sr_evaluators.items()}
    assert max(psnr.values()) - min(psnr.values()) <= 0.02
    assert min(psnr.values()) > sr_evaluators["clipped", "plain"].workload.baselines["psnr"]
    output = {key: float(evaluator.act_stats["upsampler.0"].max) for key, evaluator in sr_evaluators.items()}
    assert output["clipped", "plain"] == output["clipped", "cfqp"] == 1.0
    assert 1.05 < output["free", "plain"] <= output["free", "cfqp"]
