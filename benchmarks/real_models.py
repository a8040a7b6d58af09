"""torchvision models nobody here wrote, at W8A8: ours against ONNX Runtime's ``quantize_static``.

For each model: random weights (seeded), BatchNorm statistics set by train-mode forward passes on
real images (random 64x64 crops of scikit-image's sample images, ImageNet normalization), then
eval mode. The same crops calibrate our uniform W8A8 policy (the default export target of this
CPU) and ONNX Runtime's ``quantize_static`` (QDQ, per channel, uint8 activations, int8 weights,
min-max) on the same FP32 model; other crops evaluate. Printed per model:

- cosine to FP32: the mean over evaluation crops of the cosine between the quantized model's
  logits and FP32's (ours: the ONNX file's output; ORT: its file's);
- ONNX vs fake-quant: the smallest cosine between our ONNX file's output and our fake-quant
  model's, and their largest difference in steps of the output's quantizer (the README promises
  they are equal; issue 17's target: within one step);
- speed vs FP32 of our file and ORT's, 1 thread, batch 1, the three files taking turns
  (interleaved), medians;
- convolutions run int8 (``QLinearConv`` in ONNX Runtime's optimized graph) of the model's
  convolutions, ours and ORT's.

timm models (issue 17's regnetx_002, convnext_atto) are not covered: timm is not installable on
the machines this was written on. torchvision 0.28's compiled operators do not load against the
CPU torch 2.13 wheel; the two operator schemas its Python code checks for are defined here
first (torch.library), which the classification models do not use. Without torchvision the
script says so and exits cleanly.

    python benchmarks/real_models.py [--models resnet18,...] [--size 64] [--calib 32] [--eval 32]
        [--rounds 10] [--repeats 5] [--warmup 3] [--quick]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from _common import (
    export_float,
    header,
    interleaved,
    load,
    markdown,
    median_iqr,
    ort_quantize_static,
    session_call,
)

from mpqsearch import Policy, apply_policy
from mpqsearch.quant.export import export_onnx, onnxruntime_session
from mpqsearch.quant.graph import layer_fingerprint, quantizable_layers
from mpqsearch.quant.modules import ActFakeQuant

MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "densenet121",
          "squeezenet1_1")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def import_torchvision() -> Any:
    """torchvision, or ``None`` when it is not installed. Its compiled operators fail to register
    against the CPU torch wheel (``operator torchvision::nms does not exist``); defining the two
    schemas it checks lets the pure-Python models load."""
    try:
        import torchvision
        return torchvision
    except ModuleNotFoundError:
        return None
    except RuntimeError:
        library = torch.library.Library("torchvision", "DEF")  # kept alive below: the schemas live as long as it
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import sys
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision
        import_torchvision.library = library  # type: ignore[attr-defined]
        return torchvision


def crops(count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` random ``size`` x ``size`` RGB crops of scikit-image's sample images, normalized."""
    from mpqsearch.workloads.data import SR_IMAGES

    rng = np.random.default_rng(seed)
    images = []
    for load_image in SR_IMAGES.values():
        image = np.asarray(load_image(), dtype=np.float32)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3] / (255.0 if image.max() > 1.0 else 1.0)
        if min(image.shape[:2]) >= size:
            images.append(image)
    out = []
    for _ in range(count):
        image = images[rng.integers(len(images))]
        top, left = rng.integers(image.shape[0] - size + 1), rng.integers(image.shape[1] - size + 1)
        out.append(torch.from_numpy(image[top:top + size, left:left + size].transpose(2, 0, 1).copy()))
    batch = torch.stack(out)
    return (batch - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def build(torchvision: Any, name: str, calib: torch.Tensor) -> torch.nn.Module:
    """Random weights, BatchNorm statistics from train-mode passes over ``calib`` (a cumulative
    average), eval mode."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for batch in calib.split(8):
            model(batch)
    return model.eval()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def output_step(qmodel: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """The fake-quant output on ``x`` and the step of the quantizer that produced it, or where the
    output is computed after the last quantizer (a pooling, a flatten), that quantizer's step."""
    seen: list[tuple[ActFakeQuant, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((m, o)))
               for m in qmodel.modules() if isinstance(m, ActFakeQuant)]
    try:
        with torch.no_grad():
            out = qmodel(x)
    finally:
        for handle in handles:
            handle.remove()
    step = next((float(m.scale) for m, o in reversed(seen) if o.shape == out.shape and torch.equal(o, out)),
                float(seen[-1][0].scale) if seen else float("nan"))
    return out.numpy(), step


def _ops(path: Path) -> collections.Counter:
    optimized = path.with_suffix(".optimized.onnx")
    onnxruntime_session(path, threads=1, optimized_model_path=optimized)
    return collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)


def run_model(torchvision: Any, name: str, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    calib = crops(args.calib, args.size, seed=1)
    x = crops(args.eval, args.size, seed=2)
    model = build(torchvision, name, calib)
    start = time.perf_counter()
    qmodel = apply_policy(model, Policy.uniform(layer_fingerprint(model), 8, 8), list(calib.split(8)))
    apply_s = time.perf_counter() - start
    ours = export_onnx(qmodel, x[:1], tmp / f"{name}-ours.onnx", dynamic_batch=True)
    fp32 = export_float(model, x[:1], tmp / f"{name}-fp32.onnx", dynamic_batch=True)
    ort = ort_quantize_static(fp32, list(calib.split(8)), tmp / f"{name}-ort.onnx")
    sessions = {label: onnxruntime_session(path, threads=1) for label, path in
                (("FP32", fp32), ("ours", ours), ("ORT", ort))}
    outputs = {label: s.run(None, {s.get_inputs()[0].name: x.numpy()})[0] for label, s in sessions.items()}
    fake, step = output_step(qmodel, x)
    with torch.no_grad():
        reference = model(x).numpy()
    times = interleaved({label: session_call(s, [x[:1].numpy()]) for label, s in sessions.items()},
                        rounds=args.rounds, repeats=args.repeats, warmup=args.warmup)
    ms = {label: median_iqr(t)[0] for label, t in times.items()}
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in quantizable_layers(model).values())
    ops_ours, ops_ort = _ops(ours), _ops(ort)
    return {"model": name,
            "W8A8 cosine to FP32, ours / ORT": f"{_cosines(outputs['ours'], reference).mean():.3f} / "
                                               f"{_cosines(outputs['ORT'], reference).mean():.3f}",
            "ONNX vs fake-quant, min cosine": f"{_cosines(outputs['ours'], fake).min():.4f}",
            "max steps": f"{np.abs(outputs['ours'] - fake).max() / step:.2f}",
            "speed vs FP32, ours / ORT": f"{ms['FP32'] / ms['ours']:.2f}x / {ms['FP32'] / ms['ORT']:.2f}x",
            "FP32 ms": f"{ms['FP32']:.2f}",
            "convs int8, ours / ORT": f"{ops_ours['QLinearConv']} / {ops_ort['QLinearConv']} of {convs}",
            "apply_policy s": f"{apply_s:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision model names")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--calib", type=int, default=32, help="crops for BatchNorm statistics and calibration")
    parser.add_argument("--eval", type=int, default=32, help="crops for the cosines")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="squeezenet1_1 only, few crops and runs (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.calib, args.eval, args.rounds, args.repeats, args.warmup = "squeezenet1_1", 8, 4, 1, 1, 0
    torchvision = import_torchvision()
    if torchvision is None:
        print("# benchmarks/real_models.py: torchvision is not installed: skipped "
              "(pip install --no-deps torchvision matching your torch)")
        return
    warnings.simplefilter("ignore")
    print(header(f"python benchmarks/real_models.py: torchvision {torchvision.__version__}, {args.size}x{args.size}, "
                 f"1 thread, batch 1, {args.rounds} rounds of {args.repeats} runs per file; timm not installed "
                 f"(its models skipped)"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mpqsearch-real-") as tmp:
        for name in filter(None, args.models.split(",")):
            rows.append(run_model(torchvision, name, args, Path(tmp)))
            print(f"# {name} done, load average {load()}", flush=True)
    print()
    print(markdown(rows))
    print(f"\n# load average at the end: {load()}")


if __name__ == "__main__":
    main()
