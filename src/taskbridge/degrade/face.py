"""GFP-GAN's blind face degradation: ``y = JPEG_q((x * k_sigma) down_r + n_delta) up_r`` (REFERENCE 5).

Follows `gfpgan/data/ffhq_degradation_dataset.py` (7552a77) with BasicSR's kernels and noise:

1. blur with a 41x41 Gaussian, isotropic or anisotropic with probability 1/2 each; sigma(s) uniform in
   [0.1, 10], rotation uniform in [-pi, pi] (`random_mixed_kernels`, `cv2.filter2D`: reflect-101 border,
   which is torch's ``"reflect"`` padding);
2. resize to ``(int(W // r), int(H // r))`` with r uniform in [0.8, 8], **bilinear** (`cv2.INTER_LINEAR`,
   no antialiasing: torch ``bilinear, align_corners=False, antialias=False`` is the same sampling);
3. add Gaussian noise, sigma uniform in [0, 20] on the 0-255 scale, per pixel and channel, then clip;
4. JPEG at quality q uniform in [60, 100];
5. resize back to the input size, again **bilinear** (`cv2.INTER_LINEAR`; bicubic is an option here);
6. colour jitter with probability 0.3 (a uniform shift in [-20, 20] / 255 per channel, then clip);
7. greyscale with probability 0.01 (ITU-R 601 luma, cv2's BGR2GRAY);
8. round to 8 bits (the dataset's last step).

[decision] JPEG is kornia's differentiable codec (`jpeg_codec_differentiable`, Reich et al. 2024): it takes
any image size (pads and crops internally) and keeps the whole map differentiable w.r.t. the clean
image, unlike the reference's cv2 round trip; on photos its error is within about 0.004 (mean abs) of
libjpeg's at the same quality. The quality is floored to an integer, as libjpeg's quality is.
[decision] The 8-bit rounding (step 8, option `quantize`) passes the gradient straight through.
[decision] A blur kernel larger than the image allows with reflect padding (size > 2 min(H, W) - 1) is
cropped to that size around its centre and renormalised (tiny images only; 41 px needs >= 21 px).
[decision] `scale` (default None = GFP-GAN: back to the input size) returns the image at
``(int(H // scale), int(W // scale))`` instead, e.g. ``scale=4, downsample=4`` with fixed blur, noise and
quality is a fixed "x4" low-resolution input; the blind setting upsamples back to the input size.
Noise is drawn from the generator in `apply` after the parameters (as `lowlight`), so
``sample_params`` then ``apply`` with the same generator reproduces ``forward``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.bounds import PositiveInt, Unit
from taskbridge.degrade.base import Degradation, Range, check_range, draw, randn_like, sample_uniform
from taskbridge.registry import DEGRADATIONS

GREY = (0.299, 0.587, 0.114)  # cv2 COLOR_BGR2GRAY weights, in RGB order
JITTER = ("jitter_r", "jitter_g", "jitter_b")


def gaussian_kernels(sigma_x: Tensor, sigma_y: Tensor, theta: Tensor, size: int = 41) -> Tensor:
    """[B, size, size] float64 normalised bivariate Gaussians, covariance ``R(theta) diag(sx^2, sy^2) R(theta)^T``.

    x runs along the columns and y along the rows (BasicSR's `mesh_grid`), so theta = 0 and sx > sy
    gives a kernel wider than it is tall.
    """
    sx, sy, th = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (sigma_x, sigma_y, theta))
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    # rotate the grid into the kernel's principal axes: u = R^T p
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    logk = -0.5 * ((u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2)
    k = torch.exp(logk - logk.amax(dim=(1, 2), keepdim=True))
    return k / k.sum(dim=(1, 2), keepdim=True)


def blur(images: Tensor, kernels: Tensor) -> Tensor:
    """Per-image correlation of NCHW `images` with [B, k, k] `kernels` (reflect padding, grouped conv)."""
    b, c, h, w = images.shape
    limit = 2 * min(h, w) - 1
    k = kernels.shape[-1]
    if k > limit:  # reflect padding needs pad < size: crop the kernel around its centre, renormalise
        cut = (k - limit) // 2
        kernels = kernels[:, cut:cut + limit, cut:cut + limit]
        kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
        k = limit
    if k == 1:
        return images * kernels.reshape(b, 1, 1, 1).to(images)
    pad = k // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    weight = kernels.to(images).repeat_interleave(c, dim=0).unsqueeze(1)
    return F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w)


def jpeg(images: Tensor, quality: Tensor) -> Tensor:
    """Differentiable JPEG round trip of NCHW [0, 1] images at per-image quality [B] (kornia)."""
    from kornia.enhance import jpeg_codec_differentiable

    q = torch.as_tensor(quality, dtype=images.dtype, device=images.device).reshape(-1)
    return jpeg_codec_differentiable(images.clamp(0, 1), q)


def quantize8(x: Tensor) -> Tensor:
    """Round to the 8-bit grid with a straight-through gradient."""
    return x + ((x * 255).round() / 255 - x).detach()


def face_degrade(
    clean: Tensor,
    params: dict[str, Tensor],
    generator: torch.Generator | None = None,
    kernel_size: int = 41,
    upsample: str = "bilinear",
    scale: float | None = None,
    quantize: bool = True,
) -> Tensor:
    """NCHW `clean` in [0, 1] -> degraded by the per-image `params` of `FaceDegradation` (noise from `generator`)."""
    b, _, h, w = clean.shape
    p = {k: v.detach().cpu().double() for k, v in params.items()}
    kernels = gaussian_kernels(p["sigma_x"], p["sigma_y"], p["theta"], kernel_size).to(clean.device)
    blurred = blur(clean, kernels)
    out_size = (h, w) if scale is None else (max(1, int(h // scale)), max(1, int(w // scale)))
    outs = []
    for i in range(b):
        r = float(p["downsample"][i])
        small = (max(1, int(h // r)), max(1, int(w // r)))
        y = F.interpolate(blurred[i:i + 1], size=small, mode="bilinear", align_corners=False, antialias=False)
        sigma = float(p["noise"][i])
        if sigma > 0:
            y = (y + randn_like(y, generator) * (sigma / 255.0)).clamp(0, 1)
        y = jpeg(y, p["jpeg"][i:i + 1])
        if small != out_size:
            y = F.interpolate(y, size=out_size, mode=upsample, align_corners=False).clamp(0, 1)
        outs.append(y)
    y = torch.cat(outs)
    shift = torch.stack([p[k] for k in JITTER], dim=1).to(y).reshape(b, 3, 1, 1)
    y = (y + shift).clamp(0, 1)
    grey = (y * torch.tensor(GREY, dtype=y.dtype, device=y.device).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    g = p["gray"].to(y).reshape(b, 1, 1, 1)
    y = g * grey.expand_as(y) + (1 - g) * y
    return quantize8(y) if quantize else y


@DEGRADATIONS.register("face")
class FaceDegradation(Degradation):
    """GFP-GAN's blind face degradation: blur, downsample, noise, JPEG, upsample, colour jitter, grey.

    Each range is a number (fixed) or a (low, high) pair sampled uniformly per image; defaults are
    `train_gfpgan_v1.yml`'s. `aniso_prob` is the 'aniso' share of GFP-GAN's kernel_prob [0.5, 0.5];
    `noise` and `color_jitter_shift` are on the 0-255 scale. Parameters per image: anisotropic (0/1),
    sigma_x, sigma_y, theta, downsample, noise, jpeg, jitter_r/g/b (0 when not jittered), gray (0/1).
    """

    def __init__(
        self,
        kernel_size: PositiveInt = 41,
        blur_sigma: Range = (0.1, 10.0),
        aniso_prob: Unit = 0.5,
        rotation: Range = (-math.pi, math.pi),
        downsample: Range = (0.8, 8.0),
        noise: Range = (0.0, 20.0),
        jpeg: Range = (60.0, 100.0),
        color_jitter_prob: Unit = 0.3,
        color_jitter_shift: float = 20.0,
        gray_prob: Unit = 0.01,
        upsample: Literal["bilinear", "bicubic"] = "bilinear",
        scale: float | None = None,
        quantize: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.blur_sigma = check_range("blur_sigma", blur_sigma, 0.0)
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma!r}")
        self.rotation = check_range("rotation", rotation)
        self.downsample = check_range("downsample", downsample, 0.0)
        if self.downsample[0] <= 0:
            raise ValueError(f"downsample must be > 0, got {downsample!r}")
        self.noise = check_range("noise", noise, 0.0)
        self.jpeg = check_range("jpeg", jpeg, 1.0, 100.0)
        if color_jitter_shift < 0:
            raise ValueError(f"color_jitter_shift must be >= 0, got {color_jitter_shift}")
        if scale is not None and scale <= 0:
            raise ValueError(f"scale must be > 0 or None, got {scale}")
        self.aniso_prob, self.jitter_prob, self.gray_prob = float(aniso_prob), float(color_jitter_prob), float(gray_prob)
        self.jitter_shift = float(color_jitter_shift)
        self.upsample, self.scale, self.quantize = upsample, scale, bool(quantize)

    def sample_params(self, batch: int, size: tuple[int, int], generator: torch.Generator | None) -> dict[str, Tensor]:
        # a fixed sigma makes every kernel isotropic: such draws are recorded as isotropic (theta 0)
        varies = self.blur_sigma[0] < self.blur_sigma[1]
        aniso = ((draw(batch, generator) < self.aniso_prob) & varies).float()
        sigma_x = sample_uniform(self.blur_sigma, batch, generator)
        sigma_y = torch.where(aniso > 0, sample_uniform(self.blur_sigma, batch, generator), sigma_x)
        theta = torch.where(aniso > 0, sample_uniform(self.rotation, batch, generator), torch.zeros(batch))
        params = {"anisotropic": aniso, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta,
                  "downsample": sample_uniform(self.downsample, batch, generator),
                  "noise": sample_uniform(self.noise, batch, generator),
                  "jpeg": sample_uniform(self.jpeg, batch, generator).floor()}
        jitter = draw(batch, generator) < self.jitter_prob
        for name in JITTER:
            shift = sample_uniform((-self.jitter_shift, self.jitter_shift), batch, generator) / 255.0
            params[name] = torch.where(jitter, shift, torch.zeros(batch))
        params["gray"] = (draw(batch, generator) < self.gray_prob).float()
        return params

    def apply(self, clean: Tensor, params: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        return face_degrade(clean, params, generator, self.kernel_size, self.upsample, self.scale, self.quantize)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, blur_sigma={self.blur_sigma}, aniso_prob={self.aniso_prob}, "
                f"downsample={self.downsample}, noise={self.noise}, jpeg={self.jpeg}, "
                f"color_jitter_prob={self.jitter_prob}, gray_prob={self.gray_prob}, scale={self.scale}")
