"""Pseudo-label fusion (union class-aware NMS), certainty split, mixup weights, Y_L augmentation."""

from __future__ import annotations

import pytest
import torch

from taskbridge.tasks.base import Detections
from taskbridge.uncertainty.augment import AugmentPolicy, augment_batch
from taskbridge.uncertainty.certainty import (
    background_weight,
    certainty_masks,
    detections_to_targets,
    uncertainty_weight,
)
from taskbridge.uncertainty.mixup import label_weights, mix, sample_clean_share
from taskbridge.uncertainty.pseudo_labels import (
    cap_scores,
    classification_pseudo_labels,
    found_by_every_view,
    fuse_views,
    union_nms,
)


def dets(boxes, scores, labels, tag: float) -> Detections:
    n = len(scores)
    feats = torch.full((n, 4), tag) + torch.arange(n, dtype=torch.float32)[:, None]
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                      torch.tensor(labels, dtype=torch.long), feats, torch.tensor(scores) + 0.05,
                      torch.ones(n))


def test_union_nms_keeps_most_confident_per_cluster_across_views() -> None:
    # image 0: view 0 sees a car (0.6); view 1 sees the same car more confidently (0.9) and a person
    # overlapping it (other class: kept); image 1: the same car box must not be suppressed by image 0.
    v0 = [dets([[10, 10, 50, 50]], [0.6], [2], tag=100.0), dets([[10, 10, 50, 50]], [0.3], [2], tag=300.0)]
    v1 = [dets([[12, 11, 51, 50], [10, 10, 50, 50], [100, 100, 120, 140]], [0.9, 0.4, 0.2], [2, 0, 2], tag=200.0),
          Detections.empty(feature_dim=4)]
    out = union_nms([v0, v1], iou_thres=0.6)
    assert [len(d) for d in out] == [3, 1]
    d0 = out[0]
    assert d0.scores.tolist() == pytest.approx([0.9, 0.4, 0.2])
    assert d0.labels.tolist() == [2, 0, 2]
    assert d0.boxes[0].tolist() == [12, 11, 51, 50]
    assert d0.features is not None and d0.features[:, 0].tolist() == [200.0, 201.0, 202.0]  # kept boxes' own features
    assert d0.objectness is not None and d0.objectness.tolist() == pytest.approx([0.95, 0.45, 0.25])
    assert out[1].features is not None and out[1].features[0, 0].item() == 300.0


def test_union_nms_max_det_conf_and_empty() -> None:
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    v = [dets(boxes, [0.1, 0.5, 0.3, 0.9, 0.7], [0] * 5, tag=0.0)]
    out = union_nms([v], max_det=2, conf_thres=0.0)
    assert out[0].scores.tolist() == pytest.approx([0.9, 0.7])
    assert union_nms([v], conf_thres=0.6)[0].scores.tolist() == pytest.approx([0.9, 0.7])
    empty = union_nms([[Detections.empty(feature_dim=4)] * 2, [Detections.empty(feature_dim=4)] * 2])
    assert [len(d) for d in empty] == [0, 0] and empty[0].features is not None
    with pytest.raises(ValueError, match="one Detections per image"):
        union_nms([v, v + v])


def test_found_by_every_view_needs_the_class_and_the_overlap_in_each_view() -> None:
    # image 0: box 0 (car) is seen by both views, box 1 (person) only by view 1, box 2 (car) by view 0 only as a
    # person (wrong class) and by view 1 shifted to IoU 1/3 (< 0.5); image 1: view 0 finds nothing
    v0 = [dets([[0, 0, 40, 40], [100, 0, 140, 40]], [0.6, 0.7], [2, 0], tag=0.0),
          Detections.empty(feature_dim=4)]
    v1 = [dets([[2, 0, 42, 40], [60, 60, 90, 90], [120, 0, 160, 40]], [0.9, 0.8, 0.6], [2, 0, 2], tag=1.0),
          dets([[0, 0, 10, 10]], [0.9], [1], tag=1.0)]
    union = [dets([[2, 0, 42, 40], [60, 60, 90, 90], [100, 0, 140, 40]], [0.9, 0.8, 0.7], [2, 0, 2], tag=2.0),
             dets([[0, 0, 10, 10]], [0.9], [1], tag=2.0)]
    found = found_by_every_view(union, [v0, v1], iou_thres=0.5)
    assert found[0].tolist() == [True, False, False] and found[1].tolist() == [False]
    assert found_by_every_view(union, [v1])[0].tolist() == [True, True, False]  # one view: found where it is
    capped = cap_scores(union, found, cap=0.5)
    assert capped[0].scores.tolist() == pytest.approx([0.9, 0.5, 0.5]) and capped[1].scores.tolist() == [0.5]
    assert torch.equal(capped[0].boxes, union[0].boxes) and torch.equal(capped[0].features, union[0].features)
    low = cap_scores([dets([[0, 0, 4, 4]], [0.3], [0], tag=0.0)], [torch.tensor([False])], cap=0.5)
    assert low[0].scores.tolist() == pytest.approx([0.3])  # already under the cap: unchanged, never raised


def test_fuse_views_averages_the_views_that_find_a_box_weighted_by_their_scores() -> None:
    # image 0: the car is found by both views (0.6 and 0.9 -> score 0.75, box weighted 0.4 / 0.6); the person only
    # by view 1 (score halved); a second car only as a person in view 0 (wrong class) and at IoU 1/3 in view 1;
    # image 1: view 0 finds nothing, view 1 the box itself
    v0 = [dets([[0, 0, 40, 40], [100, 0, 140, 40]], [0.6, 0.7], [2, 0], tag=0.0), Detections.empty(feature_dim=4)]
    v1 = [dets([[10, 0, 50, 40], [60, 60, 90, 90], [120, 0, 160, 40], [0, 0, 30, 40]], [0.9, 0.8, 0.6, 0.95],
               [2, 0, 2, 7], tag=1.0),
          dets([[0, 0, 10, 10]], [0.9], [1], tag=1.0)]
    union = [dets([[10, 0, 50, 40], [60, 60, 90, 90], [100, 0, 140, 40]], [0.9, 0.8, 0.7], [2, 0, 2], tag=2.0),
             dets([[0, 0, 10, 10]], [0.9], [1], tag=2.0)]
    fused = fuse_views(union, [v0, v1], iou_thres=0.5)
    torch.testing.assert_close(fused[0].boxes, torch.tensor([[6.0, 0, 46, 40], [60, 60, 90, 90], [100, 0, 140, 40]]))
    assert fused[0].scores.tolist() == pytest.approx([0.75, 0.4, 0.7])  # the last: found by no view -> kept as is
    assert fused[1].scores.tolist() == pytest.approx([0.45]) and fused[1].boxes.tolist() == [[0, 0, 10, 10]]
    assert torch.equal(fused[0].labels, union[0].labels) and torch.equal(fused[0].features, union[0].features)
    same = fuse_views(union, [v1], iou_thres=0.5)  # one view: each box found by it is its best match
    assert same[0].scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert len(fuse_views([Detections.empty(feature_dim=4)], [v0[1:]])[0]) == 0


def test_certainty_split_and_targets() -> None:
    # conf:      0.9 (certain), 0.3 (uncertain), 0.1 (dropped), 0.8 but u' too high (dropped)
    d = dets([[0, 0, 32, 16], [32, 32, 64, 64], [0, 0, 8, 8], [8, 8, 16, 16]], [0.9, 0.3, 0.1, 0.8], [1, 2, 0, 1], 0.0)
    score = torch.tensor([0.6, 0.7, 0.5, 0.995])
    c, u = certainty_masks(d.scores, score)
    assert c.tolist() == [True, False, False, False] and u.tolist() == [False, True, False, False]
    w = uncertainty_weight(score, "official")
    tg, counts = detections_to_targets([Detections.empty(), d], [torch.zeros(0), score], (64, 64), share=0.75,
                                       weights=[torch.zeros(0), w])
    assert (counts.certain, counts.uncertain, counts.dropped) == (1, 1, 2)
    assert tg.batch_index.tolist() == [1, 1] and tg.labels.tolist() == [1, 2]
    torch.testing.assert_close(tg.boxes, torch.tensor([[0.25, 0.125, 0.5, 0.25], [0.75, 0.75, 0.5, 0.5]]))
    torch.testing.assert_close(tg.weights, torch.tensor([0.75 * 0.6, 0.75 * 0.7]))
    assert tg.soft.tolist() == [False, True] and tg.conf.tolist() == pytest.approx([1.0, 0.3])
    assert background_weight(tg) == pytest.approx(0.45)  # mean hard-target weight
    # clean-flow bounds (conf_lo = conf_hi): no uncertain branch; zero share drops everything
    tg2, c2 = detections_to_targets([d], [score], (64, 64), conf_lo=0.5)
    assert len(tg2) == 1 and c2.uncertain == 0
    assert len(detections_to_targets([d], [score], (64, 64), share=0.0)[0]) == 0


def test_empty_batch_gives_empty_targets() -> None:
    tg, counts = detections_to_targets([Detections.empty(), Detections.empty()], None, (32, 32))
    assert len(tg) == 0 and counts.certain == 0 and background_weight(tg) is None


def test_weighting_directions() -> None:
    s = torch.tensor([0.5, 0.7, 0.98])
    torch.testing.assert_close(uncertainty_weight(s, "official"), s)
    inv = uncertainty_weight(s, "inverse")
    torch.testing.assert_close(inv, torch.tensor([0.99, 0.79, 0.51]))  # same range, reversed
    assert torch.equal(uncertainty_weight(s, "none"), torch.ones(3))
    u = (s - 0.5) / 500
    torch.testing.assert_close(label_weights("umix", s, u), s)  # UMix with c=.5, eta=500 == official
    torch.testing.assert_close(label_weights("uncertainty", s, u, "inverse"), inv)
    assert torch.equal(label_weights("plain", s, u), torch.ones(3))
    with pytest.raises(ValueError, match="unknown weighting"):
        uncertainty_weight(s, "up")


def test_mixup_sampling() -> None:
    code = [sample_clean_share(0.5, "code") for _ in range(200)]
    paper = [sample_clean_share(0.5, "paper") for _ in range(200)]
    assert max(code) <= 0.5 and min(code) >= 0.0
    assert max(paper) > 0.5  # the paper's lambda is unconstrained
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert mix(a, b, 0.25).mean().item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="equal shapes"):
        mix(a, torch.ones(1, 3, 8, 8), 0.5)


def test_classification_pseudo_labels_pick_most_confident_view() -> None:
    v0 = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    v1 = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 4.0]])
    labels, conf, logits = classification_pseudo_labels([v0, v1])
    assert labels.tolist() == [0, 2]
    torch.testing.assert_close(logits, torch.stack([v0[0], v1[1]]))
    assert conf[0] == pytest.approx(v0[0].softmax(0)[0].item())


def test_augment_flips_boxes_with_images() -> None:
    img = torch.zeros(2, 3, 16, 32)
    img[:, :, :, :4] = 1.0  # bright stripe on the left
    d = [dets([[0, 0, 4, 16]], [0.9], [0], 0.0)] * 2
    torch.manual_seed(3)
    out, nd = augment_batch(img, d, AugmentPolicy(flip=1, gamma_p=0, scale_p=0, mosaic=0, cutout=0))
    assert out[:, :, :, -4:].min() == 1.0 and nd[0].boxes.tolist() == [[28, 0, 32, 16]]
    out, nd = augment_batch(img, d, AugmentPolicy(flip=0, gamma_p=1, scale_p=0, mosaic=0, cutout=0))
    assert nd[1].boxes.tolist() == [[0, 0, 4, 16]] and out.max() <= 1.0 and out[:, :, :, 4:].max() == 0.0
