"""Channel statistics and AdaIN (Huang & Belongie 2017), shared by Hierarchy Flow and its losses."""

from __future__ import annotations

import torch
from torch import Tensor


def channel_mean_std(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and std of [B, C, H, W] -> two [B, C] tensors.

    Unbiased variance + eps under the root, as AdaIN's reference and the Hierarchy Flow code compute it.
    From the sum and the sum of squares (two vectorised reductions; `torch.var_mean` is 20x slower on
    CPU for [1, 120, 276, 276]); float32 cancellation costs ~1e-7 * mean^2, far below `eps` for
    feature maps of moderate mean (checked against float64 in the tests).
    """
    flat = x.flatten(2)
    n = flat.shape[-1]
    mean = flat.mean(-1)
    sq = torch.linalg.vector_norm(flat, dim=-1).square()
    var = ((sq - n * mean.square()) / max(n - 1, 1)).clamp_min(0)
    return mean, (var + eps).sqrt()


def adain_affine(x: Tensor, mean: Tensor, std: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """AdaIN(x) = std * (x - mean(x)) / std(x) + mean as a per-channel scale and shift [B, C].

    Returned instead of the image so callers can fold it into whatever linear map follows
    (Hierarchy Flow's reverse coupling) without materialising the normalised tensor.
    """
    x_mean, x_std = channel_mean_std(x, eps)
    scale = std / x_std
    return scale, mean - x_mean * scale


def adain(x: Tensor, mean: Tensor, std: Tensor, eps: float = 1e-5) -> Tensor:
    """x [B, C, H, W] with its channel statistics replaced by `mean`, `std` [B, C]."""
    scale, shift = adain_affine(x, mean, std, eps)
    return torch.addcmul(shift[..., None, None], x, scale[..., None, None])
