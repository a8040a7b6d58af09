"""Building an image-folder workload (:class:`~.image_folder_spec.ImageFolderSpec`).

Images are read with Pillow, converted to RGB, resized (shorter side to ``resize``, bilinear with
antialiasing), centre-cropped to ``input_size`` and normalized, as torchvision's usual evaluation
transform does. They are shuffled with ``seed``; the first ``calibration_images`` calibrate, the
next ``evaluation_images`` are evaluated (never the same image). Two metrics per image: ``top1``
against the label (the image's folder, or the FP32 prediction when ``labels: fp32``) and
``agreement`` with the FP32 model's prediction, whatever the labels.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..specs import load_callable
from .base import Workload
from .image_folder_spec import ImageFolderSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def find_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """Every image under ``root`` with its class index (subdirectories in sorted order), and the
    class names; a flat folder is one class."""
    if not root.is_dir():
        raise ValueError(f"data: {root} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    folders = [root / name for name in classes] or [root]
    images = [(path, index) for index, folder in enumerate(folders) for path in sorted(folder.rglob("*"))
              if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return images, classes


def load_image(path: Path, spec: ImageFolderSpec) -> torch.Tensor:
    """One image as the model reads it: ``[3, input_size, input_size]``, normalized."""
    resize = spec.resize or round(spec.input_size * 256 / 224)
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resize / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
        left, top = (image.width - spec.input_size) // 2, (image.height - spec.input_size) // 2
        image = image.crop((left, top, left + spec.input_size, top + spec.input_size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(spec.mean).view(-1, 1, 1), torch.tensor(spec.std).view(-1, 1, 1)
    return (pixels - mean) / std


def build_model(spec: ImageFolderSpec) -> nn.Module:
    """The factory's model with the weights file loaded, in eval mode."""
    model = load_callable(spec.model, "model")()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {spec.model!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    if spec.weights is not None:
        try:
            state = torch.load(spec.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, Mapping) else state)
        except (OSError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"weights: {spec.weights}: {str(err).splitlines()[0]}") from None
    return model.eval()


def _agreement_metric(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``target`` holds per image the label and the FP32 prediction."""
    predicted = output.argmax(dim=1)
    return {"top1": (predicted == target[:, 0]).to(torch.float32),
            "agreement": (predicted == target[:, 1]).to(torch.float32)}


def image_folder_workload(spec: ImageFolderSpec) -> Workload:
    """The workload ``spec`` describes; ``ValueError`` naming the key for a bad model, weights file
    or folder."""
    images, classes = find_images(Path(spec.data))
    wanted = spec.calibration_images + spec.evaluation_images
    if len(images) < wanted:
        raise ValueError(f"data: {spec.data} holds {len(images)} images, fewer than calibration_images + "
                         f"evaluation_images = {wanted}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(spec.seed)).tolist()
    chosen = [images[i] for i in order[:wanted]]
    tensors = torch.stack([load_image(path, spec) for path, _ in chosen])
    labels = torch.tensor([label for _, label in chosen])
    calib, evaluated = tensors[:spec.calibration_images], tensors[spec.calibration_images:]
    build = functools.partial(build_model, spec)
    with torch.no_grad():
        model = build()
        fp32 = torch.cat([model(evaluated[i:i + spec.batch_size]).argmax(dim=1)
                          for i in range(0, len(evaluated), spec.batch_size)])
    use_folders = (spec.labels or ("folders" if classes else "fp32")) == "folders"
    labelled = f"labels from {len(classes)} folders" if use_folders else "FP32 predictions as labels"
    targets = torch.stack([labels[spec.calibration_images:] if use_folders else fp32, fp32], dim=1)
    batches = range(0, len(evaluated), spec.batch_size)
    return Workload(
        name=spec.name, task="classification", build_model=build, example_input=calib[:1],
        calib_data=[calib[i:i + spec.batch_size] for i in range(0, len(calib), spec.batch_size)],
        eval_data=[(evaluated[i:i + spec.batch_size], targets[i:i + spec.batch_size]) for i in batches],
        metric=_agreement_metric, directions={"top1": "maximize", "agreement": "maximize"},
        description=f"{spec.model} on {len(evaluated)} images of {spec.data} ({labelled})",
    )
