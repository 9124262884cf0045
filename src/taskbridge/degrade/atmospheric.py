"""Synthetic haze by the atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

Depth proxy (no depth map exists for ordinary photos): the IA-YOLO recipe that VaT follows
("simulating haze following [31, 47]", [31] = IA-YOLO, [47] = AD-YOLO, which reuses IA-YOLO's
VOC-foggy data), with pixel distance to the image centre ``(H // 2, W // 2)``::

    d(y, x) = -0.04 * sqrt((y - H//2)^2 + (x - W//2)^2) + sqrt(max(H, W))

i.e. the centre of the picture is "far" (dense haze) and the borders "near". Decisions:

- ``d`` is clamped at 0. IA-YOLO does not clamp; for images whose half-diagonal exceeds
  ``25 sqrt(max(H, W))`` (about 1250 px square and larger) its ``d`` turns negative, giving
  ``t > 1`` and values above the airlight model's range.
- the proxy is in *pixels*, so haze strength depends on resolution (as in IA-YOLO, which hazes
  VOC images at their ~500 px size). `reference_size` computes it as if the long side were that
  many pixels, making the haze resolution-independent; default None = IA-YOLO exactly.
- ``beta = 0.01 i + 0.05`` for an integer level ``i`` and ``A = 0.5`` (IA-YOLO). VaT says it uses
  "two scales" without values; its set sizes are exactly twice IA-YOLO's (VOCh-train 16,222 =
  2 x 8,111, VOCh-test 5,468 = 2 x 2,734), so each clean image was hazed at two strengths. We
  split IA-YOLO's ten levels into two scales: "light" (i = 0..4, beta 0.05..0.09) and "heavy"
  (i = 5..9, beta 0.10..0.14); "ia-yolo" samples all ten levels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from taskbridge.degrade.base import Degradation, Range, check_range, draw_choice, per_image, sample_uniform
from taskbridge.registry import DEGRADATIONS

HAZE_LEVELS: dict[str, tuple[int, ...]] = {
    "ia-yolo": tuple(range(10)),
    "light": tuple(range(5)),
    "heavy": tuple(range(5, 10)),
}
"""Integer haze levels i of each scale; beta = 0.01 i + 0.05."""


def beta_of_level(level: int | Tensor) -> Tensor:
    return 0.01 * torch.as_tensor(level, dtype=torch.float32) + 0.05


def depth_proxy(
    height: int,
    width: int,
    slope: float = 0.04,
    reference_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """[H, W] IA-YOLO pseudo-depth: largest at the centre pixel (H//2, W//2), clamped at 0."""
    ys = torch.arange(height, device=device, dtype=dtype) - height // 2
    xs = torch.arange(width, device=device, dtype=dtype) - width // 2
    dist = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    long_side = max(height, width)
    if reference_size is not None:
        dist = dist * (reference_size / long_side)
        long_side = reference_size
    return (-slope * dist + math.sqrt(long_side)).clamp_min(0)


def haze(
    clean: Tensor,
    beta: float | Tensor,
    airlight: float | Tensor = 0.5,
    depth: Tensor | None = None,
) -> Tensor:
    """``J t + A (1 - t)`` with ``t = exp(-beta d)``: NCHW (or CHW) clean -> hazy, differentiable.

    `beta`: scalar or [B]; `airlight`: scalar, [B] or [B, 3]; `depth`: [H, W], [B, 1, H, W] or
    None for `depth_proxy`. The output stays in [0, 1] when the inputs are.
    """
    x = clean if clean.ndim == 4 else clean.unsqueeze(0)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    d = depth_proxy(h, w, device=x.device, dtype=x.dtype) if depth is None else depth.to(x.device, x.dtype)
    t = torch.exp(-per_image(beta, x) * d)
    a = per_image(airlight, x)
    out = x * t + a * (1 - t)
    return out if clean.ndim == 4 else out.squeeze(0)


@DEGRADATIONS.register("haze")
class Haze(Degradation):
    """Synthetic haze (atmospheric scattering, IA-YOLO depth proxy); scales light/heavy/ia-yolo.

    `beta` (a number or a (low, high) range, sampled uniformly) overrides `scale`; `airlight` is a
    number or a range. See the module docstring for the depth proxy and the scale decision.
    """

    def __init__(
        self,
        scale: str = "ia-yolo",
        beta: Range | None = None,
        airlight: Range = 0.5,
        slope: float = 0.04,
        reference_size: int | None = None,
    ) -> None:
        super().__init__()
        if scale not in HAZE_LEVELS:
            raise ValueError(f"haze scale must be one of {', '.join(HAZE_LEVELS)}, got {scale!r}")
        self.scale = scale
        self.beta = None if beta is None else check_range("beta", beta, 0.0)
        self.airlight = check_range("airlight", airlight, 0.0, 1.0)
        self.slope = float(slope)
        self.reference_size = reference_size

    def sample_params(self, batch: int, size: tuple[int, int], generator: torch.Generator | None) -> dict[str, Tensor]:
        if self.beta is not None:
            beta = sample_uniform(self.beta, batch, generator)
        else:
            beta = beta_of_level(draw_choice(HAZE_LEVELS[self.scale], batch, generator))
        return {"beta": beta, "airlight": sample_uniform(self.airlight, batch, generator)}

    def apply(self, clean: Tensor, params: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        h, w = int(clean.shape[-2]), int(clean.shape[-1])
        depth = depth_proxy(h, w, self.slope, self.reference_size, clean.device, clean.dtype)
        return haze(clean, params["beta"], params["airlight"], depth)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, beta={self.beta}, airlight={self.airlight}, reference_size={self.reference_size}"
