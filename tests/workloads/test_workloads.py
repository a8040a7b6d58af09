import hashlib

import pytest
import torch

from mpqsearch import Policy, SearchSpace, apply_policy
from mpqsearch.workloads import data, get_workload, models, workload_names
from mpqsearch.workloads.metrics import mean_metric
from mpqsearch.workloads.training import train_workload

SR_WORKLOADS = ("sr-espcn-x2", "sr-srresnet-x2", "sr-rrdb-x2")
ALL_WORKLOADS = (*SR_WORKLOADS, "cls-digits")


@pytest.fixture(scope="module")
def loaded():
    """Each workload with its model and FP32 scores, built once for the module."""
    torch.set_num_threads(2)
    result = {}
    for name in ALL_WORKLOADS:
        workload = get_workload(name)
        model = workload.build_model()
        result[name] = (workload, model, mean_metric(model, workload.eval_data, workload.metric))
    return result


def test_builtins_are_registered():
    assert set(ALL_WORKLOADS) <= set(workload_names())


@pytest.mark.parametrize("name", SR_WORKLOADS)
def test_sr_workload_shapes(loaded, name):
    workload, model, _ = loaded[name]
    assert workload.task == "super-resolution" and workload.primary_metric == "psnr"
    assert workload.example_input.shape == (1, 3, data.EVAL_CROP // 2, data.EVAL_CROP // 2)
    assert len(workload.eval_data) == len(data.SR_SPLITS["test"])
    assert all(x.shape == workload.example_input.shape for x in workload.calib_data)
    for lr, hr in workload.eval_data:
        assert lr.shape[0] == 1 and hr.shape[-2:] == (2 * lr.shape[-2], 2 * lr.shape[-1])
    with torch.no_grad():
        assert model(workload.example_input).shape == (1, 3, data.EVAL_CROP, data.EVAL_CROP)
    assert not model.training


def test_digits_workload_shapes(loaded):
    workload, model, _ = loaded["cls-digits"]
    assert workload.example_input.shape == (1, 1, 8, 8)
    assert sum(len(y) for _, y in workload.eval_data) == len(data.digits("test")[1])
    with torch.no_grad():
        assert model(workload.example_input).shape == (1, 10)


def test_sr_data_is_deterministic_and_in_range():
    first, second = data.sr_pairs.__wrapped__("test", 2, 192), data.sr_pairs.__wrapped__("test", 2, 192)
    for (lr1, hr1), (lr2, hr2) in zip(first, second, strict=True):
        assert torch.equal(lr1, lr2) and torch.equal(hr1, hr2)
        assert lr1.min() >= 0 and lr1.max() <= 1


def test_lr_is_the_antialiased_bicubic_downscale():
    hr = data.load_rgb("coffee")[:, :101, :100]
    lr, cropped = data.make_pair(hr, 2)
    assert cropped.shape == (1, 3, 100, 100) and lr.shape == (1, 3, 50, 50)
    expected = torch.nn.functional.interpolate(cropped, scale_factor=0.5, mode="bicubic", antialias=True,
                                               align_corners=False).clamp(0, 1)
    assert torch.equal(lr, expected)


def test_centre_crop_is_aligned_with_the_whole_image_pair():
    pair = data.make_pair(data.load_rgb("rocket"), 2)
    lr, hr = data.centre_crop(pair, 64, 2)
    assert lr.shape[-2:] == (32, 32) and hr.shape[-2:] == (64, 64)
    whole_lr, whole_hr = pair
    top, left = (whole_lr.shape[-2] - 32) // 2, (whole_lr.shape[-1] - 32) // 2
    assert torch.equal(hr, whole_hr[..., 2 * top:2 * top + 64, 2 * left:2 * left + 64])


def test_sr_splits_are_disjoint_by_name_and_content():
    names = [n for split in data.SR_SPLITS.values() for n in split]
    assert len(names) == len(set(names)) and set(names) <= set(data.SR_IMAGES)
    digests = {hashlib.sha256(data.load_rgb(n).numpy().tobytes()).hexdigest() for n in names}
    assert len(digests) == len(names)


def test_digits_split_is_fixed_stratified_and_complete():
    train_x, train_y = data.digits("train")
    test_x, test_y = data.digits.__wrapped__("test")
    again_x, again_y = data.digits.__wrapped__("test")
    assert torch.equal(test_x, again_x) and torch.equal(test_y, again_y)
    assert len(train_y) + len(test_y) == 1797 and train_x.shape[1:] == (1, 8, 8)
    assert 0 <= float(train_x.min()) and float(train_x.max()) <= 1
    share = test_y.bincount(minlength=10) / (train_y.bincount(minlength=10) + test_y.bincount(minlength=10))
    assert torch.allclose(share, torch.full((10,), data.DIGITS_TEST_FRACTION), atol=0.01)


@pytest.mark.parametrize("name", SR_WORKLOADS)
def test_fp32_sr_model_beats_bicubic_by_half_a_db(loaded, name):
    workload, _, scores = loaded[name]
    assert scores["psnr"] >= workload.baselines["psnr"] + 0.5
    assert scores["ssim"] > workload.baselines["ssim"]


def test_digits_reaches_95_percent(loaded):
    assert loaded["cls-digits"][2]["top1"] >= 0.95


@pytest.mark.parametrize("name", ALL_WORKLOADS)
def test_uniform_w8a8_ptq_loses_little(loaded, name):
    workload, model, fp32 = loaded[name]
    space = SearchSpace.from_model(model, workload.example_input)
    qmodel = apply_policy(model, Policy.uniform(space, 8, 8), workload.calib_data)
    scores = mean_metric(qmodel, workload.eval_data, workload.metric)
    allowed = 0.005 if name == "cls-digits" else 0.1
    assert fp32[workload.primary_metric] - scores[workload.primary_metric] <= allowed


def test_rrdb_equalization_keeps_the_function_and_levels_the_ranges():
    model = models.RRDBNet().eval()
    with torch.no_grad():
        model.body[0].blocks[2].convs[3].weight.mul_(50)  # one dense activation far beyond the trunk
    inputs = [torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    peaks = {}
    convs = [conv for name, conv in model.named_modules() if ".convs." in name]

    def record(module, args, out):
        activation = out if module is model.head else torch.nn.functional.leaky_relu(out, 0.2)
        peaks[module] = max(peaks.get(module, 0.0), activation.abs().max().item())

    for conv in [model.head, *convs]:
        conv.register_forward_hook(record)
    with torch.no_grad():
        before = [model(x) for x in inputs]
        model.equalize_(inputs)
        peaks.clear()
        after = [model(x) for x in inputs]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(after, before, strict=True))
    assert all(peaks[conv] == pytest.approx(peaks[model.head], rel=1e-4) for conv in convs)


def test_missing_weights_name_the_file_and_the_train_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"sr-rrdb-x2\.pt.*mpqsearch train sr-rrdb-x2"):
        get_workload("sr-rrdb-x2").build_model()


@pytest.mark.parametrize("name", ["sr-espcn-x2", "cls-digits"])
def test_training_smoke_is_deterministic(tmp_path, name):
    first = train_workload(name, steps=3, seed=1, out=tmp_path / "a.pt", progress=False)
    second = train_workload(name, steps=3, seed=1, out=tmp_path / "b.pt", progress=False)
    state, again = torch.load(first), torch.load(second)
    assert all(torch.equal(state[k], again[k]) for k in state)
    models.MODELS[name]().load_state_dict(state)
