"""Class-aware NMS over decoded YOLO-style candidates, with the bookkeeping VaT needs.

Scoring follows YOLOv5's `non_max_suppression`: candidates need objectness > conf_thres, the
score of a (box, class) pair is obj * cls_prob and must exceed conf_thres too; boxes of different
classes never suppress each other (offset trick), at most `max_nms` boxes enter torchvision NMS and
`max_det` leave it. Each kept box also carries its objectness, its class probability and the raw
pre-sigmoid head vector of its anchor, so union NMS over several views (concatenate candidates
along the anchor axis, then call this once) returns NUQ features too.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

from .base import Detections

MAX_WH = 7680.0  # class offset in pixels, larger than any image side we handle


def xywh2xyxy(b: Tensor) -> Tensor:
    xy, half = b[..., :2], b[..., 2:4] / 2
    return torch.cat((xy - half, xy + half), dim=-1)


def non_max_suppression(
    pred: Tensor,
    raw: Tensor | None = None,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    multi_label: bool = False,
    agnostic: bool = False,
    max_nms: int = 30000,
) -> list[Detections]:
    """pred: [bs, N, 5 + nc] decoded (cx, cy, w, h in pixels, obj prob, class probs).

    raw: optional [bs, N, F] per-candidate vectors returned as `Detections.features`.
    """
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres={conf_thres} and iou_thres={iou_thres} must lie in [0, 1]")
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"pred must be [batch, candidates, 5 + nc], got {tuple(pred.shape)}")
    if raw is not None and raw.shape[:2] != pred.shape[:2]:
        raise ValueError(f"raw {tuple(raw.shape)} must match pred {tuple(pred.shape)} in batch and candidates")
    nc = pred.shape[-1] - 5
    multi_label = multi_label and nc > 1
    out: list[Detections] = []
    for xi in range(pred.shape[0]):
        p = pred[xi]
        cand = (p[:, 4] > conf_thres).nonzero().squeeze(1)
        x = p[cand]
        scores = x[:, 5:] * x[:, 4:5]
        if multi_label:
            rows, labels = (scores > conf_thres).nonzero().T
            conf = scores[rows, labels]
        else:
            conf, labels = scores.max(1)
            rows = (conf > conf_thres).nonzero().squeeze(1)
            conf, labels = conf[rows], labels[rows]
        if rows.numel() == 0:
            out.append(Detections.empty(pred.device, raw.shape[-1] if raw is not None else None))
            continue
        order = conf.argsort(descending=True)[:max_nms]
        rows, labels, conf = rows[order], labels[order], conf[order]
        boxes = xywh2xyxy(x[rows, :4])
        keep = nms(boxes, conf, iou_thres) if agnostic else batched_nms_offset(boxes, conf, labels, iou_thres)
        keep = keep[:max_det]
        rows, labels = rows[keep], labels[keep]
        anchor = cand[rows]
        out.append(Detections(
            boxes=boxes[keep],
            scores=conf[keep],
            labels=labels.long(),
            features=raw[xi, anchor] if raw is not None else None,
            objectness=x[rows, 4],
            class_prob=x[rows, 5 + labels],
        ))
    return out


def batched_nms_offset(boxes: Tensor, scores: Tensor, labels: Tensor, iou_thres: float) -> Tensor:
    """Class-aware NMS by shifting each class by MAX_WH pixels (YOLOv5's trick; exact for boxes < MAX_WH)."""
    if boxes.numel() and float(boxes.abs().max()) < MAX_WH / 2:
        return nms(boxes + labels[:, None].to(boxes) * MAX_WH, scores, iou_thres)
    return batched_nms(boxes, scores, labels, iou_thres)
