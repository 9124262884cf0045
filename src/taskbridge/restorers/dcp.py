"""Dark Channel Prior dehazing (He, Sun, Tang, CVPR 2009) with guided-filter refinement.

Haze model I = J t + A (1 - t). In haze-free outdoor patches some channel is nearly 0 (the dark
channel prior), so t ~ 1 - omega * dark(I / A). A is the brightest input pixel among the 0.1 %
pixels with the brightest dark channel. The blocky t is refined with the guided filter (He et al.,
ECCV 2010: r = 60, eps = 1e-3 on the grey image for ~600 px photos) instead of soft matting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import guided_blur
from torch import Tensor

from taskbridge.registry import RESTORERS
from taskbridge.restorers.base import FrozenRestorer

_GREY = (0.299, 0.587, 0.114)


def dark_channel(images: Tensor, patch: int) -> Tensor:
    """min over colour channels, then a `patch` x `patch` min filter ([B,1,H,W])."""
    mins = images.amin(dim=1, keepdim=True)
    pad = patch // 2
    # max_pool pads with -inf, so the border windows only see real pixels.
    return -F.max_pool2d(-mins, kernel_size=patch, stride=1, padding=pad)[..., : images.shape[-2], : images.shape[-1]]


def atmospheric_light(images: Tensor, dark: Tensor, top: float) -> Tensor:
    """Per image: the brightest input pixel among the `top` fraction with the brightest dark channel ([B,3,1,1])."""
    b, c, h, w = images.shape
    k = max(1, int(round(top * h * w)))
    idx = dark.reshape(b, -1).topk(k, dim=1).indices  # [B, k]
    pixels = images.reshape(b, c, -1).gather(2, idx.unsqueeze(1).expand(b, c, k))  # [B, 3, k]
    best = pixels.sum(1).argmax(1)  # brightest = largest R+G+B
    return pixels.gather(2, best.view(b, 1, 1).expand(b, c, 1)).unsqueeze(-1)


@RESTORERS.register("dcp")
class DarkChannelPrior(FrozenRestorer):
    """Dark Channel Prior dehazing (He et al. 2009) with guided-filter transmission refinement."""

    def __init__(
        self,
        patch: int = 15,
        omega: float = 0.95,
        t0: float = 0.1,
        top: float = 0.001,
        radius: int | None = None,
        radius_fraction: float = 0.1,
        eps: float = 1e-3,
        refine: bool = True,
    ) -> None:
        """`radius=None` scales the guided-filter radius with the image: `radius_fraction * min(H, W)`
        (60 px on the 600 px photos of the paper), so small test images are not over-smoothed."""
        super().__init__()
        if patch < 1 or patch % 2 == 0:
            raise ValueError(f"dcp: patch must be a positive odd integer, got {patch}")
        if not 0 < omega <= 1 or not 0 < t0 < 1 or not 0 < top <= 1:
            raise ValueError(f"dcp: need 0<omega<=1, 0<t0<1, 0<top<=1; got omega={omega}, t0={t0}, top={top}")
        self.patch, self.omega, self.t0, self.top = patch, omega, t0, top
        self.radius, self.radius_fraction, self.eps, self.refine = radius, radius_fraction, eps, refine
        self.freeze()

    def guided_radius(self, h: int, w: int) -> int:
        r = self.radius if self.radius is not None else round(self.radius_fraction * min(h, w))
        return int(max(1, min(r, (min(h, w) - 1) // 2)))  # reflect padding needs r < side

    def transmission(self, images: Tensor, airlight: Tensor, radius: int | None = None) -> Tensor:
        """Coarse t from the dark channel of I / A, refined with the guided filter on the grey image."""
        t = 1.0 - self.omega * dark_channel(images / airlight.clamp_min(1e-6), self.patch)
        if self.refine:
            grey = (images * images.new_tensor(_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
            r = radius if radius is not None else self.guided_radius(*images.shape[-2:])
            r = int(max(1, min(r, (min(images.shape[-2:]) - 1) // 2)))  # reflect padding needs r < side
            t = guided_blur(grey, t, kernel_size=2 * r + 1, eps=self.eps, separable=True)
        return t

    def margin(self, h: int, w: int) -> int:
        """The dark channel's half patch, plus twice the guided radius (a mean of means), plus one."""
        return self.patch // 2 + (2 * self.guided_radius(h, w) if self.refine else 0) + 1

    def prepare(self, images: Tensor, size: tuple[int, int]) -> dict[str, object]:
        """The atmospheric light (from `images`, the photo or a reduced copy) and the guided radius of the photo."""
        return {"airlight": atmospheric_light(images, dark_channel(images, self.patch), self.top),
                "radius": self.guided_radius(*size)}

    def forward(self, images: Tensor, airlight: Tensor | None = None, radius: int | None = None) -> Tensor:
        """`airlight` / `radius` given: a tile of a larger photo, with the photo's own values."""
        self.check_input(images)
        if airlight is None:
            airlight = atmospheric_light(images, dark_channel(images, self.patch), self.top)
        t = self.transmission(images, airlight, radius).clamp_min(self.t0)
        return torch.clamp((images - airlight) / t + airlight, 0.0, 1.0)
