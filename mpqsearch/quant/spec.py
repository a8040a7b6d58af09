"""What a layer's quantization is: bit widths and the choices of seed 004.

This module holds only plain values (no torch), so the policy file can validate against the
same constants the numerics use.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FLOAT_BITS = 32
"""A bit width of 32 means "leave this tensor in float"."""
MIN_BITS = 2
MAX_BITS = 16
VALID_BITS = (*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS)
DEFAULT_INPUT_BITS = 8
"""Bits of a model input that quantized layers read: images are 8-bit data."""
DEFAULT_WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
"""A search space's weight choices unless told otherwise: 2 to 8 bits, the range int8 runtimes execute."""
DEFAULT_ACT_BITS = (4, 5, 6, 7, 8)
"""A search space's activation choices unless told otherwise: below 4 bits super-resolution outputs
are destroyed."""

SCALE_KINDS = ("product", "shift")
"""Seed 004, Table 1: ``product`` is any float scale, ``shift`` a power of two (``s = 2^-fl``)."""
GRANULARITIES = ("per_channel", "per_tensor")
CLIPPINGS = ("max", "mse", "percentile")
EXPORT_TARGETS = ("portable", "vnni")
"""The CPUs a quantized model is made for. ``portable`` (default): every x86 CPU; 8-bit weights
keep their levels within +-64 (:data:`SAFE_WEIGHT_LEVEL`), so ONNX Runtime's fast u8s8 kernels
compute them exactly even where they add two products in a saturating int16 (AVX2 without VNNI).
``vnni``: CPUs with AVX512-VNNI or AVX-VNNI, the full +-127 (wrong on AVX2-only CPUs).
docs/numerics.md ("Export targets") has the measurements behind the choice."""
SAFE_WEIGHT_LEVEL = 64
"""The largest weight level a u8s8 kernel cannot saturate with: ``255 * 64 * 2 = 32640 <= 32767``."""


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this x86 CPU has AVX512-VNNI or AVX-VNNI (its ``flags``); ``None`` when unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else bool({"avx512_vnni", "avx_vnni"} & set(flags))


TARGET_VARIABLE = "MPQSEARCH_TARGET"
"""Set to ``portable`` or ``vnni`` to choose the default target instead of this CPU (for files
made here and run on other machines, and for results that do not depend on the machine)."""


def default_target() -> str:
    """The export target when none is given: :data:`TARGET_VARIABLE` if set, else this CPU's:
    ``vnni`` where it has VNNI (full-range 8-bit weights, exact and fast here), else ``portable``
    (exact and fast on every x86 CPU). docs/numerics.md says why the default follows the CPU (the
    +-64 range cost sr-espcn-clip-x2 1.0 dB at W8A8)."""
    chosen = os.environ.get(TARGET_VARIABLE)
    if chosen:
        if chosen not in EXPORT_TARGETS:
            raise ValueError(f"{TARGET_VARIABLE}={chosen!r}: must be one of {', '.join(EXPORT_TARGETS)}")
        return chosen
    return "vnni" if cpu_has_vnni() else "portable"


def check_bits(bits: Any) -> int:
    """Return ``bits`` if it is a valid bit width (2..16 or 32), else raise ``ValueError``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"bits must be an integer, got {bits!r}")
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be {MIN_BITS}..{MAX_BITS} or {FLOAT_BITS}, got {bits}")
    return bits


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerQuantConfig:
    """How one layer is quantized.

    ``weight_bits`` quantize the layer's weight (signed, symmetric); ``act_bits`` quantize the
    layer's output activation, taken after the element-wise activation that follows the layer
    (ReLU and friends), as seed 004 does: its gamma rule compares each layer's activation scale.

    Defaults: weights per output channel with MSE clipping (seed 004 chose MSE truncation for
    weights, Table 3); activations clipped at their calibrated maximum, the scale seed 004's gamma
    rule reads.
    """

    weight_bits: int = 8
    act_bits: int = 8
    scale: str = "product"
    granularity: str = "per_channel"
    weight_clipping: str = "mse"
    act_clipping: str = "max"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                if f.name.endswith("bits"):
                    check_bits(value)
                elif f.name == "scale":
                    _check_choice(f.name, value, SCALE_KINDS)
                elif f.name == "granularity":
                    _check_choice(f.name, value, GRANULARITIES)
                else:
                    _check_choice(f.name, value, CLIPPINGS)
            except ValueError as err:
                raise ValueError(f"{f.name}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
