"""Pseudo-labels from several views of the same image: union + one class-aware NMS (REFERENCE §1.3).

The detections of all views of an image are pooled and a single class-aware NMS keeps, per
cluster of overlapping same-class boxes, the most confident box across views (with its NUQ
feature, objectness and class probability). All images of a batch go through one
`torchvision.ops.batched_nms` call (group id = image * n_classes + class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from taskbridge.tasks.base import Detections


def _cat_optional(parts: list[Tensor | None], n_rows: list[int], tail: tuple[int, ...], like: Tensor) -> Tensor | None:
    """Concatenate an optional field; None if any non-empty part lacks it."""
    if any(p is None and n for p, n in zip(parts, n_rows, strict=True)):
        return None
    full = [p if p is not None else like.new_zeros((0, *tail)) for p in parts]
    try:
        return torch.cat(full)
    except RuntimeError as err:
        raise ValueError(f"union_nms: views disagree on an optional field's shape ({err})") from err


def union_nms(
    views: Sequence[Sequence[Detections]],
    iou_thres: float = 0.6,
    max_det: int = 1000,
    conf_thres: float = 0.0,
) -> list[Detections]:
    """Fuse per-view detections of a batch: ``views[v][i]`` are the detections of image i in view v.

    Returns one `Detections` per image: the union of all views after class-aware NMS, sorted by
    score, at most `max_det` boxes, only boxes with score >= conf_thres.
    """
    if not views:
        raise ValueError("union_nms: no views given")
    n_img = len(views[0])
    if any(len(v) != n_img for v in views):
        raise ValueError(f"union_nms: every view needs one Detections per image, got {[len(v) for v in views]}")
    if n_img == 0:
        return []
    flat = [views[v][i] for i in range(n_img) for v in range(len(views))]  # image-major order
    counts = [len(d) for d in flat]
    ref = flat[0].boxes
    boxes = torch.cat([d.boxes.reshape(-1, 4) for d in flat]).to(ref.dtype)
    scores = torch.cat([d.scores.reshape(-1) for d in flat]).to(boxes.dtype)
    labels = torch.cat([d.labels.reshape(-1).long() for d in flat])
    image = torch.repeat_interleave(
        torch.arange(n_img, device=boxes.device).repeat_interleave(len(views)),
        torch.tensor(counts, device=boxes.device),
    )
    feat_dim = next((d.features.shape[1] for d in flat if d.features is not None and d.features.ndim == 2), 0)
    features = _cat_optional([d.features for d in flat], counts, (feat_dim,), boxes)
    objectness = _cat_optional([d.objectness for d in flat], counts, (), boxes)
    class_prob = _cat_optional([d.class_prob for d in flat], counts, (), boxes)

    keep = (scores >= conf_thres).nonzero().squeeze(1)
    if keep.numel():
        n_cls = int(labels.max()) + 1
        group = image[keep] * n_cls + labels[keep]
        keep = keep[batched_nms(boxes[keep], scores[keep], group, iou_thres)]  # sorted by score
    # per-image cap at max_det, keeping the score order inside each image
    order = torch.sort(image[keep], stable=True).indices
    keep = keep[order]
    img_k = image[keep]
    counts_k = torch.bincount(img_k, minlength=n_img)
    start = torch.cumsum(counts_k, 0) - counts_k
    rank = torch.arange(keep.numel(), device=keep.device) - start[img_k]
    keep = keep[rank < max_det]
    counts_k = torch.bincount(image[keep], minlength=n_img).tolist()

    fused = Detections(boxes, scores, labels, features, objectness, class_prob).select(keep)
    out: list[Detections] = []
    offset = 0
    for c in counts_k:
        out.append(fused.select(slice(offset, offset + c)))  # type: ignore[arg-type]
        offset += c
    return out


def found_by_every_view(
    dets: Sequence[Detections], views: Sequence[Sequence[Detections]], iou_thres: float = 0.5,
) -> list[Tensor]:
    """Per image, which boxes of `dets` (typically the views' union) every view also finds: a box of the same
    class overlapping it by at least `iou_thres`. The detection form of "the views agree" (method.det_labels)."""
    out = []
    for i, d in enumerate(dets):
        found = torch.ones(len(d), dtype=torch.bool, device=d.boxes.device)
        for view in views:
            found &= _best_match(d, view[i])[0] >= iou_thres
        out.append(found)
    return out


def _best_match(d: Detections, other: Detections) -> tuple[Tensor, Tensor]:
    """Per box of `d`: the IoU of the most-overlapping box of its class in `other` (-1 where there is none) and
    that box's index. "A view finds a box" is this IoU reaching the threshold, for det_labels agree and fuse."""
    if not len(other):
        return torch.full((len(d),), -1.0, device=d.boxes.device), torch.zeros(len(d), dtype=torch.long,
                                                                               device=d.boxes.device)
    same = d.labels.reshape(-1, 1) == other.labels.reshape(1, -1).to(d.labels.device)
    iou = torch.where(same, box_iou(d.boxes.float(), other.boxes.float().to(d.boxes.device)), -1.0)
    return iou.max(1)


def fuse_views(
    dets: Sequence[Detections], views: Sequence[Sequence[Detections]], iou_thres: float = 0.5,
) -> list[Detections]:
    """Per image, each box of `dets` (typically the views' union) replaced by the views' consensus: its
    coordinates the score-weighted mean of the best-overlapping box of its class in every view that finds one
    (IoU >= `iou_thres`), its score the sum of those views' scores over the number of views, so that a box one
    view of two finds keeps half its score (weighted box fusion, Solovyev et al. 2021). Class, NUQ feature and
    the other fields stay the union's. The label is no single view's own: no blend of the views reproduces it
    by reproducing one view's detections (method.det_labels "fuse")."""
    out = []
    n_views = len(views)
    for i, d in enumerate(dets):
        if not len(d) or not n_views:
            out.append(d)
            continue
        boxes = d.boxes.float()
        box_sum = torch.zeros_like(boxes)
        score_sum = torch.zeros_like(boxes[:, 0])
        for view in views:
            other = view[i]
            if not len(other):
                continue
            best_iou, best = _best_match(d, other)
            s = torch.where(best_iou >= iou_thres, other.scores.float().to(boxes.device)[best], 0.0)
            box_sum += s[:, None] * other.boxes.float().to(boxes.device)[best]
            score_sum += s
        found = score_sum > 0
        fused = torch.where(found[:, None], box_sum / score_sum.clamp_min(1e-12)[:, None], boxes)
        score = torch.where(found, score_sum / n_views, d.scores.float())
        out.append(replace(d, boxes=fused.to(d.boxes.dtype), scores=score.to(d.scores.dtype)))
    return out


def cap_scores(dets: Sequence[Detections], keep: Sequence[Tensor], cap: float) -> list[Detections]:
    """The same detections with the score of every box outside `keep` lowered to at most `cap` (a box that was
    certain above `cap` becomes an uncertain, objectness-only pseudo-label; nothing is dropped)."""
    return [replace(d, scores=torch.where(k, d.scores, d.scores.clamp(max=cap))) for d, k in zip(dets, keep, strict=True)]


@torch.no_grad()
def predict_views(
    task: Any, views: Sequence[Tensor], conf_thres: float = 0.1, iou_thres: float = 0.6, max_det: int = 1000,
    classes: Sequence[int] | None = None,
) -> list[list[Detections]]:
    """Run the frozen detector once on all views (concatenated on the batch axis), split per view;
    `classes` keeps only those model classes (the ones the task is evaluated on)."""
    if not views:
        return []
    b = views[0].shape[0]
    dets = task.predict(torch.cat(list(views)), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                        multi_label=False, return_features=True)
    if classes is not None:
        wanted = torch.tensor(list(classes), dtype=torch.long)
        dets = [d.select(torch.isin(d.labels, wanted.to(d.labels.device))) for d in dets]
    return [list(dets[i * b:(i + 1) * b]) for i in range(len(views))]


def classification_pseudo_labels(logits_views: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the view with the highest top probability wins: (labels [B], conf [B], logits [B, C])."""
    stack = torch.stack(list(logits_views))  # [V, B, C]
    conf_v, label_v = stack.softmax(-1).max(-1)  # [V, B]
    best = conf_v.argmax(0)  # [B]
    ar = torch.arange(stack.shape[1], device=stack.device)
    return label_v[best, ar], conf_v[best, ar], stack[best, ar]
