"""A workload without code: a model factory, optional weights and a folder of images.

Written in an experiment file (``workload:`` as a mapping) or in a YAML file of its own that the
command line takes wherever a workload goes (``mpqsearch evaluate my-workload.yaml``)::

    model: torchvision.models:resnet18   # any module:function returning a torch.nn.Module
    weights: resnet18.pt                 # optional: a state_dict file, relative to this file
    data: images/                        # torchvision's ImageFolder layout: a subdirectory per class
    input_size: 224                      # resized (shorter side to ``resize``), centre-cropped
    calibration_images: 32
    evaluation_images: 256

This module holds only the schema (torch-free, so the experiment file reads without torch);
:mod:`.image_folder` builds the workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _positive(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


Positive = Annotated[int, BeforeValidator(_positive)]


class ImageFolderSpec(BaseModel):
    """What an image-folder workload is made of (module docstring).

    ``labels``: ``folders`` (the class of an image is its subdirectory, in sorted order, as
    torchvision's ``ImageFolder`` numbers them) or ``fp32`` (the FP32 model's own prediction, for
    images without labels, or classes the model does not number that way); default ``folders``
    when ``data`` has subdirectories, else ``fp32``. ``mean``/``std`` normalize the [0, 1] pixels
    (ImageNet's by default, what torchvision's models expect).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: StrictStr
    data: StrictStr
    weights: StrictStr | None = None
    input_size: Positive = 224
    resize: Positive | None = None
    """The shorter side before the centre crop; default ``input_size * 256 / 224`` (torchvision's)."""
    mean: list[float] = Field(default=list(IMAGENET_MEAN), min_length=1)
    std: list[float] = Field(default=list(IMAGENET_STD), min_length=1)
    labels: Literal["folders", "fp32"] | None = None
    calibration_images: Positive = 32
    evaluation_images: Positive = 256
    batch_size: Positive = 32
    seed: int = 0
    """Shuffles the images before calibration and evaluation images are taken (disjoint)."""

    @model_validator(mode="after")
    def _same_channels(self) -> ImageFolderSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have one value per channel, got {len(self.mean)} and {len(self.std)}")
        return self

    def resolved(self, base: Path) -> ImageFolderSpec:
        """This spec with relative ``data`` and ``weights`` paths made absolute from ``base``."""
        def absolute(path: str | None) -> str | None:
            return None if path is None else str((base / Path(path).expanduser()).resolve())
        return self.model_copy(update={"data": absolute(self.data), "weights": absolute(self.weights)})

    @property
    def name(self) -> str:
        return f"{self.model} on {Path(self.data).name}"

    def __str__(self) -> str:
        return self.name
