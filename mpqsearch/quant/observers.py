"""Calibration statistics of one activation tensor.

Statistics do not depend on the bit width, so one calibration pass serves every policy: the
scale for any bits, clipping and scale kind is derived from them afterwards.
"""

from __future__ import annotations

import torch

from .functional import DEFAULT_PERCENTILE, clip_values, scale_from_clip

SAMPLES_PER_BATCH = 1 << 16
MAX_SAMPLES = 1 << 20


class ActivationStats:
    """Running min and max of a tensor, plus a deterministic sample of its values.

    The exact min and max serve ``max`` clipping; ``mse`` and ``percentile`` clipping use the
    sample: an evenly strided subset of each batch (at most ``SAMPLES_PER_BATCH`` values, and
    ``MAX_SAMPLES`` in all), strided rather than random so that calibration is reproducible.
    """

    def __init__(self) -> None:
        self.min = torch.tensor(float("inf"))
        self.max = torch.tensor(float("-inf"))
        self.samples = torch.empty(0)
        self.batches = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().to(torch.float32).flatten().cpu()
        if flat.numel() == 0:
            return
        self.min = torch.minimum(self.min, flat.min())
        self.max = torch.maximum(self.max, flat.max())
        room = MAX_SAMPLES - self.samples.numel()
        if room > 0:
            step = max(1, -(-flat.numel() // min(SAMPLES_PER_BATCH, room)))
            self.samples = torch.cat([self.samples, flat[::step][:room]])
        self.batches += 1

    @property
    def observed(self) -> bool:
        return self.batches > 0

    @property
    def nonnegative(self) -> bool:
        return self.observed and bool(self.min >= 0)

    def clip(self, bits: int, signed: bool, clipping: str = "max", kind: str = "product",
             percentile: float = DEFAULT_PERCENTILE) -> torch.Tensor:
        """The clip value for these bits; ``max`` uses the exact extremes, others the sample."""
        if not self.observed:
            raise RuntimeError("activation was never observed during calibration")
        if clipping == "max":
            return torch.maximum(self.max, -self.min) if signed else self.max.clamp_min(0)
        return clip_values(self.samples.reshape(1, -1), bits, signed, clipping, kind, percentile, narrow=False)[0]

    def scale(self, bits: int, signed: bool, clipping: str = "max", kind: str = "product") -> torch.Tensor:
        return scale_from_clip(self.clip(bits, signed, clipping, kind), bits, signed, kind)

    def affine(self, bits: int, clipping: str = "max", kind: str = "product") -> tuple[torch.Tensor, int]:
        """Scale and zero point of an asymmetric ``bits``-bit grid from the observed minimum (the
        bottom of a tensor bounded below, such as SiLU's) up to the clip value of ``x - min``."""
        if not self.observed:
            raise RuntimeError("activation was never observed during calibration")
        low = self.min.clamp_max(0)
        if clipping == "max":
            span = self.max.clamp_min(0) - low
        else:
            span = clip_values((self.samples - low).reshape(1, -1), bits, False, clipping, kind, narrow=False)[0]
        scale = scale_from_clip(span, bits, False, kind)
        return scale, int(torch.round(-low / scale).clamp(0, 2**bits - 1))

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"min": self.min, "max": self.max, "samples": self.samples, "batches": self.batches}

    @classmethod
    def from_state_dict(cls, state: dict) -> ActivationStats:
        stats = cls()
        stats.min, stats.max = state["min"], state["max"]
        stats.samples, stats.batches = state["samples"], int(state["batches"])
        return stats
