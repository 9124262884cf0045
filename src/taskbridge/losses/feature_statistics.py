"""Feature-statistics alignment: make a frozen model's feature maps of translated images look, channel by
channel, like its feature maps of clean images.

A loss on what the frozen task model *sees*, not on its outputs: it needs no pseudo-labels, so its
direction does not depend on which objects the detector already finds, and it does not fade as the
labels are fitted. Fog and darkness shift the per-channel mean and spread of the detector's features
(lower contrast, fewer strong activations) systematically across images, so the batch estimate has a
common direction (`scripts/vat_grad_stats.py` measures it as the `feature` term).

Per feature level l and channel c, over batch and space: m_lc and s_lc of the translated images against
the clean targets M_lc and S_lc (fixed, estimated once over many clean images):

    L = mean_l mean_c [ (m_lc - M_lc)^2 + (s_lc - S_lc)^2 ] / (S_lc^2 + eps)

Normalising by the clean spread makes channels and levels of different scales count alike (the
moment-matching form of feature-distribution alignment in unsupervised domain adaptation, e.g. CORAL's
diagonal, Sun & Saenko 2016).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

EPS = 1e-6


def _channel_rows(feature: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, C, H, W] -> [C, B*H*W] in `dtype`: one row of values per channel."""
    if feature.ndim != 4:
        raise ValueError(f"feature maps must be [B, C, H, W], got shape {tuple(feature.shape)}")
    return feature.to(dtype).transpose(0, 1).reshape(feature.shape[1], -1)


def channel_statistics(feature: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of [B, C, H, W] over batch and space (at least float32)."""
    x = _channel_rows(feature, torch.promote_types(feature.dtype, torch.float32))
    mean = x.mean(1)
    return mean, (x - mean[:, None]).pow(2).mean(1).add(EPS).sqrt()


Statistics = list[tuple[Tensor, Tensor]]  # per level: (mean, std) per channel


def running_statistics(batch: Statistics, running: Statistics | None, momentum: float) -> Statistics:
    """momentum * running + (1 - momentum) * batch, the running part detached: the loss then compares a
    low-noise estimate with the target (a 4-image batch's moments vary with its content more than with the
    degradation) while the gradient still flows through this batch's share."""
    if running is None or momentum == 0:
        return batch
    return [(momentum * rm.detach() + (1 - momentum) * m, momentum * rs.detach() + (1 - momentum) * s)
            for (m, s), (rm, rs) in zip(batch, running, strict=True)]


class RunningStatistics(nn.Module):
    """`running_statistics` with its running average kept in the method's checkpoint (as extra state), so a
    resumed run continues the average instead of restarting it from one batch. Checkpoints written before it
    was stored load with no average (the first batch starts it, as in a fresh run)."""

    def __init__(self, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"running statistics: the momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: Statistics | None = None
        self.register_load_state_dict_pre_hook(self._older_checkpoint_has_none)

    def forward(self, batch: Statistics) -> Statistics:
        """The statistics to compare for this batch; remembers them (detached) for the next one."""
        running = None if self.value is None else [
            (rm.to(m.device), rs.to(s.device)) for (rm, rs), (m, s) in zip(self.value, batch, strict=True)]
        stats = running_statistics(batch, running, self.momentum)
        self.value = [(m.detach(), s.detach()) for m, s in stats]
        return stats

    def get_extra_state(self) -> dict[str, Any]:
        return {"value": self.value}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        value = (state or {}).get("value")
        self.value = None if value is None else [(m, s) for m, s in value]

    @staticmethod
    def _older_checkpoint_has_none(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        state_dict.setdefault(f"{prefix}_extra_state", {"value": None})


def feature_statistics_loss(features: Sequence[Tensor], targets: Statistics) -> Tensor:
    """The alignment loss above for one batch of feature maps (one per level) against clean (mean, std)."""
    return statistics_loss([channel_statistics(f) for f in features], targets)


def statistics_loss(stats: Statistics, targets: Statistics) -> Tensor:
    """The alignment loss above for given per-level (mean, std) against the clean targets."""
    if len(stats) != len(targets) or not stats:
        raise ValueError(f"feature_statistics_loss: {len(stats)} feature levels for {len(targets)} targets")
    terms = []
    for (mean, std), (t_mean, t_std) in zip(stats, targets, strict=True):
        if mean.shape != t_mean.shape:
            raise ValueError(f"feature_statistics_loss: {mean.numel()} channels against {t_mean.numel()} in the target")
        scale = t_std.pow(2) + EPS
        terms.append((((mean - t_mean) ** 2 + (std - t_std) ** 2) / scale).mean())
    return torch.stack(terms).mean()


@torch.no_grad()
def clean_feature_statistics(batches: Iterable[Tensor], feature_maps: Callable[[Tensor], list[Tensor]]) -> Statistics:
    """Per level, the (mean, std) per channel of `feature_maps(batch)` over all batches' pixels, accumulated in
    float64 so that many small batches give the statistics of their union."""
    sums: list[list[Tensor]] = []
    count: list[int] = []
    for batch in batches:
        for level, f in enumerate(feature_maps(batch)):
            x = _channel_rows(f, torch.float64)
            if level == len(sums):
                sums.append([x.new_zeros(f.shape[1]), x.new_zeros(f.shape[1])])
                count.append(0)
            sums[level][0] += x.sum(1)
            sums[level][1] += (x * x).sum(1)
            count[level] += x.shape[1]
    if not sums:
        raise ValueError("clean_feature_statistics: no images")
    out = []
    for (s1, s2), n in zip(sums, count, strict=True):
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0)
        out.append((mean.float(), var.add(EPS).sqrt().float()))
    return out
