"""Detection metrics: Pascal-VOC AP@0.5 per class (the VaT paper's metric) and a COCO cross-check.

VOC AP follows the VOC2010+ devkit definition: detections of a class are ranked by score over the
whole set, a detection is a true positive when its best-overlapping ground truth box of the same
class in the same image has IoU > threshold and was not matched before; matching a *difficult*
box counts as neither TP nor FP, and difficult boxes are not in the recall denominator. AP is the
area under the precision envelope ("all-point"), or the mean of the envelope at recall
0, 0.1, ..., 1 (VOC2007 "11-point"). The COCO-style numbers come from torchmetrics'
`MeanAveragePrecision` (pycocotools backend) so a reader can compare with an independent code path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from taskbridge.registry import METRICS


@dataclass
class ImageBoxes:
    """Boxes of one image in pixel xyxy; `scores` for predictions, `difficult` for ground truth."""

    boxes: Tensor  # [N, 4] xyxy
    labels: Tensor  # [N] int64 evaluation class index
    scores: Tensor | None = None
    difficult: Tensor | None = None  # [N] bool


def box_iou_np(box: np.ndarray, boxes: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU of one xyxy box with many; `pixel_offset=1` is the old VOC devkit's inclusive-pixel convention."""
    ix1 = np.maximum(boxes[:, 0], box[0])
    iy1 = np.maximum(boxes[:, 1], box[1])
    ix2 = np.minimum(boxes[:, 2], box[2])
    iy2 = np.minimum(boxes[:, 3], box[3])
    iw = np.maximum(ix2 - ix1 + pixel_offset, 0.0)
    ih = np.maximum(iy2 - iy1 + pixel_offset, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + pixel_offset) * (box[3] - box[1] + pixel_offset)
    areas = (boxes[:, 2] - boxes[:, 0] + pixel_offset) * (boxes[:, 3] - boxes[:, 1] + pixel_offset)
    union = np.maximum(area + areas - inter, np.finfo(np.float64).eps)
    return inter / union


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_11_point: bool = False) -> float:
    """Area under the precision envelope (all-point) or the VOC2007 11-point mean."""
    if use_11_point:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            p = precision[recall >= t]
            ap += (p.max() if p.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 2, -1, -1):  # envelope: best precision at any higher recall
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_match_image(
    pred: ImageBoxes, target: ImageBoxes, cls: int, iou_thres: float = 0.5, pixel_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One image's detections of one class, best score first: (scores, tp, fp, npos).

    Greedy VOC matching only looks at higher-scored detections of the same image, so each image can be
    matched on its own; a set's curve is then its images' flags ranked together (`voc_class_pr`), and a
    bootstrap resample of images reuses the flags (`metrics.bootstrap`).
    """
    m = (target.labels == cls).cpu().numpy()
    gboxes = target.boxes.detach().cpu().double().numpy()[m]
    diff = (target.difficult.cpu().numpy()[m] if target.difficult is not None else np.zeros(int(m.sum()), bool)).astype(bool)
    npos = int((~diff).sum())
    k = (pred.labels == cls).cpu().numpy()
    if not k.any():
        return np.zeros(0), np.zeros(0), np.zeros(0), npos
    assert pred.scores is not None, "predictions need scores"
    sc = pred.scores.detach().cpu().double().numpy()[k]
    order = np.argsort(-sc, kind="stable")
    sc, bx = sc[order], pred.boxes.detach().cpu().double().numpy()[k][order]
    used = np.zeros(len(gboxes), bool)
    tp, fp = np.zeros(len(sc)), np.zeros(len(sc))
    for d, box in enumerate(bx):
        if len(gboxes) == 0:
            fp[d] = 1
            continue
        ious = box_iou_np(box, gboxes, pixel_offset)
        j = int(np.argmax(ious))
        if ious[j] > iou_thres:
            if diff[j]:
                continue  # matched a difficult box: ignored
            if not used[j]:
                tp[d], used[j] = 1, True
            else:
                fp[d] = 1  # duplicate detection
        else:
            fp[d] = 1
    return sc, tp, fp, npos


def ranked_pr(
    matched: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Recall/precision of images' matched detections (`voc_match_image`, in image order) ranked together by
    score (stable: image order breaks ties); returns (rec, prec, npos, ndet)."""
    scores, tp, fp = (np.concatenate([m[k] for m in matched]) if matched else np.zeros(0) for k in range(3))
    npos = sum(m[3] for m in matched)
    if not len(scores):
        return np.zeros(0), np.zeros(0), npos, 0
    order = np.argsort(-scores, kind="stable")
    ctp, cfp = np.cumsum(tp[order]), np.cumsum(fp[order])
    rec = ctp / npos if npos > 0 else np.full(len(ctp), np.nan)
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return rec, prec, npos, len(scores)


def class_ap(rec: np.ndarray, prec: np.ndarray, npos: int, ndet: int, use_11_point: bool = False) -> float:
    """AP of one class: NaN without ground truth (left out of the mean), 0 without detections."""
    if npos == 0:
        return float("nan")
    return 0.0 if ndet == 0 else voc_ap(rec, prec, use_11_point)


def voc_class_pr(
    preds: Sequence[ImageBoxes],
    targets: Sequence[ImageBoxes],
    cls: int,
    iou_thres: float = 0.5,
    pixel_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Recall/precision curve of one class over a set of images; returns (rec, prec, npos, ndet)."""
    return ranked_pr([voc_match_image(p, t, cls, iou_thres, pixel_offset) for p, t in zip(preds, targets, strict=True)])


def voc_detection_ap(
    preds: Sequence[ImageBoxes],
    targets: Sequence[ImageBoxes],
    class_names: Sequence[str],
    iou_thres: float = 0.5,
    use_11_point: bool = False,
    pixel_offset: float = 0.0,
) -> dict:
    """Per-class VOC AP and their mean over the classes that have ground truth.

    A class without non-difficult ground truth has AP NaN and is left out of the mean (reported
    in `missing_classes`), so an absent class neither inflates nor deflates mAP.
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction sets but {len(targets)} target sets")
    per_class: dict[str, dict] = {}
    aps = []
    for c, name in enumerate(class_names):
        rec, prec, npos, ndet = voc_class_pr(preds, targets, c, iou_thres, pixel_offset)
        ap = class_ap(rec, prec, npos, ndet, use_11_point)
        per_class[name] = {
            "ap": ap, "num_gt": npos, "num_det": ndet,
            "max_recall": float(rec[-1]) if ndet and npos else 0.0,
        }
        if not math.isnan(ap):
            aps.append(ap)
    return {
        "map": float(np.mean(aps)) if aps else float("nan"),
        "per_class": per_class,
        "missing_classes": [n for n, v in per_class.items() if math.isnan(v["ap"])],
        "iou_thres": iou_thres,
        "ap_definition": "VOC 11-point" if use_11_point else "VOC all-point (area under precision envelope)",
    }


def common_class_map(voc: dict, min_boxes: int) -> tuple[float, list[str]]:
    """Mean AP over the classes with at least `min_boxes` non-difficult ground-truth boxes, and those classes.

    On a small split a rare class's AP is a coin toss (with 4 boxes one detection moves it by 0.25, mAP by
    0.06), so a selection metric may leave such classes out; which ones is fixed by the split, not by a run.
    """
    kept = [c for c, v in voc["per_class"].items() if v["num_gt"] >= min_boxes and not math.isnan(v["ap"])]
    return (float(np.mean([voc["per_class"][c]["ap"] for c in kept])) if kept else float("nan")), kept


def coco_backend() -> str | None:
    """The COCO evaluator torchmetrics can use here (an optional dependency), or None."""
    import importlib.util

    for backend in ("pycocotools", "faster_coco_eval"):  # torchmetrics names each backend by its module
        if importlib.util.find_spec(backend) is not None:
            return backend
    return None


def coco_detection_ap(
    preds: Sequence[ImageBoxes], targets: Sequence[ImageBoxes], class_names: Sequence[str], max_det: int = 300
) -> dict:
    """COCO-style mAP@0.5 and mAP@0.5:0.95 through torchmetrics (pycocotools backend) as a cross-check.

    Difficult boxes are passed as `iscrowd`, COCO's "ignore" flag; COCO AP uses 101-point
    interpolation, so it differs slightly from VOC all-point AP by construction.
    """
    from torchmetrics.detection import MeanAveragePrecision

    backend = coco_backend()
    if backend is None:
        raise ModuleNotFoundError("COCO-style AP needs pycocotools: pip install 'taskbridge[coco]'")
    metric = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", class_metrics=False, backend=backend, extended_summary=True,
        max_detection_thresholds=[1, 10, max_det],
    )
    p_list, t_list = [], []
    for p, t in zip(preds, targets, strict=True):
        assert p.scores is not None
        p_list.append({"boxes": p.boxes.float().cpu(), "scores": p.scores.float().cpu(), "labels": p.labels.cpu()})
        crowd = t.difficult if t.difficult is not None else torch.zeros(len(t.labels), dtype=torch.bool)
        t_list.append({"boxes": t.boxes.float().cpu(), "labels": t.labels.cpu(), "iscrowd": crowd.long().cpu()})
    metric.update(p_list, t_list)
    res = metric.compute()
    # pycocotools' summary hard-codes maxDets=100 for mAP50:95 (torchmetrics reports -1 otherwise), so
    # both numbers are read from the precision array [T, R, K, A, M] at area "all" and the last maxDets.
    prec = res["precision"][:, :, :, 0, -1]

    def mean_valid(p: Tensor) -> float:
        v = p[p > -1]
        return float(v.mean()) if v.numel() else float("nan")

    classes = res["classes"].reshape(-1).tolist()
    per_class = {class_names[int(c)]: {"map50": mean_valid(prec[0, :, k]), "map50_95": mean_valid(prec[:, :, k])}
                 for k, c in enumerate(classes)}
    return {
        "map50": mean_valid(prec[0]),
        "map50_95": mean_valid(prec),
        "per_class": per_class,
        "implementation": f"torchmetrics MeanAveragePrecision ({backend}), 101-point COCO AP, maxDets {max_det}",
    }


@METRICS.register("voc-ap")
class VOCDetectionAP:
    """Pascal-VOC AP@IoU per class and mAP, accumulated image by image (update/compute)."""

    lower_better = False

    def __init__(self, class_names: Sequence[str], iou_thres: float = 0.5, use_11_point: bool = False,
                 pixel_offset: float = 0.0) -> None:
        self.class_names = list(class_names)
        self.iou_thres, self.use_11_point, self.pixel_offset = iou_thres, use_11_point, pixel_offset
        self.preds: list[ImageBoxes] = []
        self.targets: list[ImageBoxes] = []

    def update(self, preds: Sequence[ImageBoxes], targets: Sequence[ImageBoxes]) -> None:
        self.preds += list(preds)
        self.targets += list(targets)

    def compute(self) -> dict:
        return voc_detection_ap(self.preds, self.targets, self.class_names, self.iou_thres,
                                self.use_11_point, self.pixel_offset)


@METRICS.register("coco-ap")
class COCODetectionAP(VOCDetectionAP):
    """COCO-style mAP@0.5 and @0.5:0.95 (torchmetrics/pycocotools), accumulated with update/compute."""

    def __init__(self, class_names: Sequence[str], max_det: int = 300) -> None:
        super().__init__(class_names)
        self.max_det = max_det

    def compute(self) -> dict:
        return coco_detection_ap(self.preds, self.targets, self.class_names, self.max_det)
