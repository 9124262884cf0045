"""Optional strong augmentation of the translation flow's input and its pseudo-labels Y_L (REFERENCE §1.3).

The reference code augments (flip, gamma x gain, scale-down, mosaic, cutout); the paper says no
augmentation is used, so VaT runs with ``augment: false`` by default. Implemented here: horizontal
flip (p 0.5, boxes mirrored) and a photometric gamma in [0.5, 1.3] times gain in [0.8, 1.1]
(p 0.5, boxes unchanged). Per image, plain torch, vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from taskbridge.tasks.base import Detections


def flip_detections(det: Detections, width: int) -> Detections:
    b = det.boxes
    boxes = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    return Detections(boxes, det.scores, det.labels, det.features, det.objectness, det.class_prob)


@torch.no_grad()
def augment_batch(
    images: Tensor, dets: Sequence[Detections], p_flip: float = 0.5, p_gamma: float = 0.5,
    gamma: tuple[float, float] = (0.5, 1.3), gain: tuple[float, float] = (0.8, 1.1),
) -> tuple[Tensor, list[Detections]]:
    """Flip and gamma/gain each image independently; returns new images and updated detections."""
    b, _, _, w = images.shape
    dev = images.device
    flip = torch.rand(b, device=dev) < p_flip
    out = torch.where(flip[:, None, None, None], images.flip(-1), images)
    photo = torch.rand(b, device=dev) < p_gamma
    g = torch.empty(b, device=dev).uniform_(*gamma)
    k = torch.empty(b, device=dev).uniform_(*gain)
    adjusted = (out.clamp(0, 1) ** g[:, None, None, None] * k[:, None, None, None]).clamp(0, 1)
    out = torch.where(photo[:, None, None, None], adjusted, out)
    new = [flip_detections(d, w) if bool(f) else d for d, f in zip(dets, flip.tolist(), strict=True)]
    return out, new
