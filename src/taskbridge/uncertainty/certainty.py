"""Certainty filtering of pseudo-labels and conversion to weighted detection targets (REFERENCE §1.5).

* certain:   conf > conf_hi and u' < threshold -> hard target (box, objectness, class), weight a;
* uncertain: conf_lo < conf <= conf_hi and u' < threshold -> soft target (objectness = conf), weight a;
  the clean flow passes conf_lo = conf_hi, which disables this branch as in the official code.
* everything else is dropped.

Weight direction ([decision], REFERENCE §1.10). With u' = scale * u + offset in [offset, threshold):
* ``official``: a = share * u' (0.5 + 500 u as coded; grows with uncertainty, UMix-style);
* ``inverse``:  a = share * (offset + threshold - u'), the mirror image in the same range
  (0.5 ... 0.99 for the official constants), so the two directions differ only in direction;
* ``none``:     a = share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from taskbridge.tasks.base import Detections, DetectionTargets

WEIGHTINGS = ("official", "inverse", "none")


def uncertainty_weight(score: Tensor, mode: str, offset: float = 0.5, threshold: float = 0.99) -> Tensor:
    """Per-label weight from the uncertainty score u' (see module docstring)."""
    if mode == "official":
        return score
    if mode == "inverse":
        return (offset + threshold) - score
    if mode == "none":
        return torch.ones_like(score)
    raise ValueError(f"unknown weighting '{mode}'; use one of {', '.join(WEIGHTINGS)}")


def certainty_masks(
    conf: Tensor, score: Tensor, conf_hi: float = 0.5, conf_lo: float = 0.2, threshold: float = 0.99,
) -> tuple[Tensor, Tensor]:
    """(certain, uncertain) boolean masks; both require u' < threshold."""
    ok = score < threshold
    certain = ok & (conf > conf_hi)
    uncertain = ok & (conf > conf_lo) & (conf <= conf_hi)
    return certain, uncertain


@dataclass
class LabelCounts:
    certain: int
    uncertain: int
    dropped: int


def detections_to_targets(
    dets: Sequence[Detections],
    scores: Sequence[Tensor] | None,
    image_hw: tuple[int, int],
    share: float | Tensor = 1.0,
    weights: Sequence[Tensor] | None = None,
    conf_hi: float = 0.5,
    conf_lo: float = 0.2,
    threshold: float = 0.99,
) -> tuple[DetectionTargets, LabelCounts]:
    """Filter per-image pseudo-labels and build normalised-cxcywh `DetectionTargets`.

    `scores[i]` is u' of each box of image i (None: every box passes the uncertainty test),
    `weights[i]` its uncertainty weight (None: 1), `share` the image's mixup share (scalar or [B]).
    Rows with zero share are dropped (the image is not in the mix).
    """
    b = len(dets)
    dev = dets[0].boxes.device if b else torch.device("cpu")
    if b == 0:
        return DetectionTargets.empty(dev), LabelCounts(0, 0, 0)
    counts = torch.tensor([len(d) for d in dets], device=dev)
    bidx = torch.repeat_interleave(torch.arange(b, device=dev), counts)
    boxes = torch.cat([d.boxes.reshape(-1, 4) for d in dets]).float()
    conf = torch.cat([d.scores.reshape(-1) for d in dets]).float()
    labels = torch.cat([d.labels.reshape(-1) for d in dets]).long()
    score = torch.cat(list(scores)).float().to(dev) if scores is not None else torch.zeros_like(conf)
    w = torch.cat(list(weights)).float().to(dev) if weights is not None else torch.ones_like(conf)
    shares = torch.as_tensor(share, dtype=torch.float32, device=dev).expand(b)[bidx] if b else conf
    if score.shape != conf.shape or w.shape != conf.shape:
        raise ValueError("detections_to_targets: scores/weights must have one value per box")

    certain, uncertain = certainty_masks(conf, score, conf_hi, conf_lo, threshold)
    keep = (certain | uncertain) & (shares > 0)
    h, wd = image_hw
    scale = boxes.new_tensor([wd, h, wd, h])
    xyxy = boxes[keep]
    cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                          xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1) / scale
    targets = DetectionTargets(
        batch_index=bidx[keep], labels=labels[keep], boxes=cxcywh,
        weights=(shares * w)[keep], soft=uncertain[keep], conf=torch.where(uncertain, conf, 1.0)[keep],
    )
    n_c, n_u = int((certain & keep).sum()), int((uncertain & keep).sum())
    return targets, LabelCounts(n_c, n_u, int(conf.numel()) - n_c - n_u)


def background_weight(targets: DetectionTargets) -> float | None:
    """Objectness weight of background cells: mean weight of the hard targets (official rule),
    falling back to the mean of all target weights when only soft targets exist (where the
    official code produced NaN and silently dropped the objectness loss). None if no targets."""
    if len(targets) == 0:
        return None
    hard = ~targets.soft
    w = targets.weights[hard] if bool(hard.any()) else targets.weights
    return float(w.mean())
