"""VOC AP against a hand computation and an independent implementation; COCO cross-check; classification metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from taskbridge.metrics.classification import macro_roc_auc, top1_accuracy
from taskbridge.metrics.detection import (
    ImageBoxes,
    coco_detection_ap,
    common_class_map,
    voc_ap,
    voc_detection_ap,
)


def B(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def hand_case() -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    # class 0: GT A, B in image 0; C and a difficult D in image 1. class 2: one GT, never detected.
    targets = [
        ImageBoxes(B([0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]), torch.tensor([0, 0, 2]),
                   difficult=torch.tensor([False, False, False])),
        ImageBoxes(B([0, 0, 10, 10], [50, 50, 60, 60]), torch.tensor([0, 0]), difficult=torch.tensor([False, True])),
    ]
    preds = [
        ImageBoxes(B([0, 0, 10, 10], [1, 0, 10, 10], [70, 70, 80, 80]), torch.tensor([0, 0, 1]),
                   torch.tensor([0.9, 0.8, 0.95])),  # TP, duplicate FP, class-1 FP (class 1 has no GT)
        ImageBoxes(B([50, 50, 60, 60], [100, 100, 110, 110], [0, 0, 10, 9]), torch.tensor([0, 0, 0]),
                   torch.tensor([0.7, 0.6, 0.5])),  # difficult (ignored), FP, TP (IoU 0.9)
    ]
    return preds, targets


def test_voc_ap_hand_made_case() -> None:
    preds, targets = hand_case()
    res = voc_detection_ap(preds, targets, ["a", "b", "c"])
    # ranked class-0 list without the difficult match: TP FP FP TP, npos 3
    # recall 1/3 1/3 1/3 2/3, precision 1 .5 1/3 .5 -> envelope area 1/3*1 + 1/3*.5 = 0.5
    assert res["per_class"]["a"]["ap"] == pytest.approx(0.5)
    assert res["per_class"]["a"]["num_gt"] == 3 and res["per_class"]["a"]["num_det"] == 5
    assert math.isnan(res["per_class"]["b"]["ap"]) and res["missing_classes"] == ["b"]
    assert res["per_class"]["c"]["ap"] == 0.0
    assert res["map"] == pytest.approx(0.25)
    # VOC2007 11-point: recall >= 0, .1, .2, .3 -> 1; .4, .5, .6 -> .5; .7 ... 1 -> 0
    assert voc_detection_ap(preds, targets, ["a", "b", "c"], use_11_point=True)["per_class"]["a"]["ap"] == pytest.approx(5.5 / 11)


def test_voc_ap_curve_edges() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert voc_ap(np.array([0.5, 0.5]), np.array([1.0, 0.5])) == pytest.approx(0.5)


def independent_ap(preds, targets, cls, thr=0.5) -> float:
    """Written separately: per-image greedy matching with torchvision IoU, then numeric integration of
    the interpolated precision p(r) = max{precision at recall >= r} on a fine recall grid."""
    dets = []
    for i, p in enumerate(preds):
        for b, s, l in zip(p.boxes, p.scores, p.labels, strict=True):
            if l == cls:
                dets.append((float(s), i, b))
    dets.sort(key=lambda d: -d[0])
    taken = {i: set() for i in range(len(targets))}
    npos = sum(int(((t.labels == cls) & ~t.difficult).sum()) for t in targets)
    outcome = []
    for _, i, b in dets:
        t = targets[i]
        idx = (t.labels == cls).nonzero().flatten()
        if len(idx) == 0:
            outcome.append(0)
            continue
        ious = box_iou(b[None], t.boxes[idx])[0]
        j = int(idx[int(ious.argmax())])
        if float(ious.max()) <= thr:
            outcome.append(0)
        elif bool(t.difficult[j]):
            continue
        elif j in taken[i]:
            outcome.append(0)
        else:
            taken[i].add(j)
            outcome.append(1)
    tp = np.cumsum(outcome)
    rec = tp / npos
    prec = tp / np.arange(1, len(outcome) + 1)
    grid = np.linspace(0, 1, 200001)[1:]
    interp = np.array([prec[rec >= r].max() if (rec >= r).any() else 0.0 for r in grid[::50]])
    return float(interp.mean())


def test_voc_ap_matches_independent_implementation_on_random_sets() -> None:
    g = torch.Generator().manual_seed(1)
    preds, targets = [], []
    for _ in range(12):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 80
        gt = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 30], 1)
        labels = torch.randint(0, 2, (n,), generator=g)
        targets.append(ImageBoxes(gt, labels, difficult=torch.rand(n, generator=g) < 0.15))
        jitter = gt + torch.randn(n, 4, generator=g) * 4
        extra = torch.rand(3, 4, generator=g) * 60
        extra[:, 2:] += extra[:, :2] + 5
        pb = torch.cat([jitter, jitter[:1], extra])
        preds.append(ImageBoxes(pb, torch.cat([labels, labels[:1], torch.randint(0, 2, (3,), generator=g)]),
                                torch.rand(len(pb), generator=g)))
    res = voc_detection_ap(preds, targets, ["x", "y"])
    for c, name in enumerate(["x", "y"]):
        assert res["per_class"][name]["ap"] == pytest.approx(independent_ap(preds, targets, c), abs=2e-3)


def test_coco_cross_check_perfect_and_shifted() -> None:
    t = [ImageBoxes(B([0, 0, 100, 100], [200, 200, 260, 300]), torch.tensor([0, 1]), difficult=torch.tensor([False, False]))]
    perfect = [ImageBoxes(t[0].boxes.clone(), t[0].labels.clone(), torch.tensor([0.9, 0.8]))]
    res = coco_detection_ap(perfect, t, ["a", "b"])
    assert res["map50"] == pytest.approx(1.0) and res["map50_95"] == pytest.approx(1.0)
    shifted = [ImageBoxes(B([20, 0, 120, 100], [200, 200, 260, 300]), torch.tensor([0, 1]), torch.tensor([0.9, 0.8]))]
    res = coco_detection_ap(shifted, t, ["a", "b"])  # IoU 100*80/(2e4-8e3)=0.667: counts at .5-.65 only
    assert res["per_class"]["a"]["map50"] == pytest.approx(1.0)
    assert res["per_class"]["a"]["map50_95"] == pytest.approx(0.4)
    assert voc_detection_ap(shifted, t, ["a", "b"])["map"] == pytest.approx(1.0)


def test_classification_metrics() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
    labels = torch.tensor([0, 1, 2, 1])
    assert top1_accuracy(probs, labels) == pytest.approx(0.75)
    # by hand, one class against the rest: class 0 and 2 rank their positive above every negative (AUC 1);
    # class 1 positives 0.8 and 0.25 against negatives 0.2 and 0.3 win 3 of 4 pairs (AUC 0.75)
    assert macro_roc_auc(probs, labels) == pytest.approx((1.0 + 0.75 + 1.0) / 3)
    assert macro_roc_auc(torch.eye(3), torch.arange(3)) == pytest.approx(1.0)


def test_common_class_map_leaves_out_rare_classes() -> None:
    voc = {"per_class": {"car": {"ap": 0.6, "num_gt": 164}, "person": {"ap": 0.3, "num_gt": 10},
                         "bicycle": {"ap": 0.25, "num_gt": 4}, "motorcycle": {"ap": float("nan"), "num_gt": 0}}}
    assert common_class_map(voc, 10) == (pytest.approx(0.45), ["car", "person"])
    assert common_class_map(voc, 1)[1] == ["car", "person", "bicycle"]
    assert math.isnan(common_class_map(voc, 1000)[0])


def test_selection_on_common_classes_needs_their_threshold() -> None:
    from taskbridge.run_config import DetectionValidation

    base = {"type": "detection", "task": {"type": "yolov5n"}, "data": "dawn_fog", "metric": "map50_common"}
    with pytest.raises(ValueError, match="needs val.min_boxes"):
        DetectionValidation(**base)
    assert DetectionValidation(**base, min_boxes=10).min_boxes == 10
