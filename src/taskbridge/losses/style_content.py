"""AdaIN-style content loss and Hierarchy Flow's aligned-style loss (Eqs. 5-7; REFERENCE 3), on features
of a frozen network (`taskbridge.features`).

Content: MSE between channel-normalised features of the output and of the content image. Aligned
style, per layer and per sample: e_c = (mu_c(out) - mu_c(style))^2 is sorted ascending, the smallest
floor(k C) channels are kept (the same channels for the std term), and the kept errors are summed and
divided by C. The mask is built per sample, so a sample's loss never depends on the rest of its batch
(the public code selects std channels with the whole batch's sort result: with batch > 1 it zeroes the
union of every sample's dropped channels). k = 1 is the plain AdaIN style loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from taskbridge.bounds import Unit
from taskbridge.modules.adain import channel_mean_std
from taskbridge.registry import LOSSES


def channel_normalized(feat: Tensor, eps: float = 1e-5) -> Tensor:
    mean, std = channel_mean_std(feat, eps)
    return (feat - mean[..., None, None]) / std[..., None, None]


def content_loss(out_feat: Tensor, content_feat: Tensor) -> Tensor:
    """MSE of the channel-normalised features (the content side carries no gradient)."""
    return (channel_normalized(out_feat) - channel_normalized(content_feat.detach())).square().mean()


def aligned_style_per_sample(out_feat: Tensor, style_feat: Tensor, k: float = 0.8) -> Tensor:
    """One layer's aligned-style loss of each sample [B]."""
    out_mean, out_std = channel_mean_std(out_feat)
    ref_mean, ref_std = channel_mean_std(style_feat.detach())
    err_mean, err_std = (out_mean - ref_mean).square(), (out_std - ref_std).square()
    channels = err_mean.shape[1]
    keep = int(channels * k)
    if keep >= channels:
        return (err_mean + err_std).mean(1)
    order = err_mean.detach().argsort(dim=1)[:, :keep]
    mask = torch.zeros_like(err_mean).scatter_(1, order, 1.0)
    return ((err_mean + err_std) * mask).sum(1) / channels


def aligned_style_loss(out_feats: Sequence[Tensor], style_feats: Sequence[Tensor], k: float = 0.8) -> Tensor:
    """Sum over layers of the batch mean of `aligned_style_per_sample`."""
    return sum(aligned_style_per_sample(o, s, k).mean() for o, s in zip(out_feats, style_feats, strict=True))


@LOSSES.register("aligned-style")
class AlignedStyleLoss(nn.Module):
    """Hierarchy Flow's aligned-style loss over feature lists (k = 1: the plain AdaIN style loss)."""

    def __init__(self, k: Unit = 0.8) -> None:
        super().__init__()
        if not 0 < k <= 1:
            raise ValueError(f"aligned-style k must be in (0, 1], got {k}")
        self.k = float(k)

    def forward(self, out_feats: Sequence[Tensor], style_feats: Sequence[Tensor]) -> Tensor:
        return aligned_style_loss(out_feats, style_feats, self.k)


@LOSSES.register("adain-content")
class ContentLoss(nn.Module):
    """MSE of channel-normalised features (AdaIN's content loss; Hierarchy Flow Eq. 5)."""

    def forward(self, out_feat: Tensor, content_feat: Tensor) -> Tensor:
        return content_loss(out_feat, content_feat)
