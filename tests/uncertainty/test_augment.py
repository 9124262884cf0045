"""Reference augmentation set for the VaT translation flow: pure geometry on small synthetic tensors."""

from __future__ import annotations

import pydantic
import pytest
import torch

from taskbridge.tasks.base import Detections
from taskbridge.uncertainty.augment import (
    AugmentPolicy,
    augment_batch,
    augment_batch_with_origin,
    gather_rows,
)

OFF = {"flip": 0.0, "gamma_p": 0.0, "scale_p": 0.0, "mosaic": 0.0, "cutout": 0.0}
COLOURS = [0.1, 0.3, 0.7, 0.9]


def only(**kw: object) -> AugmentPolicy:
    """A policy with every transform off except those given."""
    return AugmentPolicy(**{**OFF, **kw})


def det(boxes: list[list[float]], tag: float = 0.0, feat_dim: int | None = 3, extras: bool = True) -> Detections:
    n = len(boxes)
    b = torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)
    feats = None if feat_dim is None else (torch.arange(n * feat_dim, dtype=torch.float32).reshape(n, feat_dim) + tag)
    idx = torch.arange(n, dtype=torch.float32)
    return Detections(b, idx / 100 + tag, torch.full((n,), int(tag), dtype=torch.long), feats,
                      idx / 50 if extras else None, idx / 25 if extras else None)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_preserved_and_range_kept_under_full_policy() -> None:
    img = torch.rand(4, 3, 64, 64, generator=g(0))
    dets = [det([[4, 4, 30, 30], [20, 10, 60, 50]], tag=i) for i in range(4)]
    for seed in range(5):
        out, new = augment_batch(img, dets, generator=g(seed))
        assert out.shape == img.shape and out.dtype == img.dtype and len(new) == 4
        assert out.min() >= 0.0 and out.max() <= 1.0
        for d in new:
            n = len(d)
            assert d.boxes.shape == (n, 4) and d.scores.shape == (n,) and d.labels.shape == (n,)
            assert d.features is not None and d.features.shape == (n, 3)
            assert (d.boxes[:, 2] - d.boxes[:, 0] >= 2).all() and (d.boxes[:, 3] - d.boxes[:, 1] >= 2).all()
            assert (d.boxes >= 0).all() and (d.boxes <= 64).all()


def test_two_positional_args_use_full_policy() -> None:
    img = torch.rand(2, 3, 32, 32)
    out, new = augment_batch(img, [det([[2, 2, 20, 20]]), det([])])
    assert out.shape == img.shape and len(new) == 2


def test_all_probabilities_zero_is_identity() -> None:
    img = torch.rand(4, 3, 64, 64, generator=g(1))
    dets = [det([[1, 2, 30, 40], [10, 10, 12, 13]], tag=i) for i in range(3)] + [det([], tag=3)]
    out, new = augment_batch(img, dets, AugmentPolicy(**OFF), g(0))
    assert torch.equal(out, img) and out is not img
    for a, b in zip(dets, new, strict=True):
        for name in ("boxes", "scores", "labels", "features", "objectness", "class_prob"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_flip_mirrors_boxes_and_pixels() -> None:
    img = torch.zeros(2, 3, 16, 32)
    img[:, :, :, :4] = 1.0
    dets = [det([[0, 0, 4, 16], [5, 1, 9, 7]]) for _ in range(2)]
    out, new = augment_batch(img, dets, only(flip=1.0), g(0))
    assert torch.equal(out, img.flip(-1))
    for d in new:
        assert d.boxes.tolist() == [[28, 0, 32, 16], [23, 1, 27, 7]]  # x1' = W - x2, x2' = W - x1


def test_scale_down_halves_boxes_and_keeps_them_on_their_pixels() -> None:
    img = torch.zeros(4, 3, 64, 64)
    img[:, :, 16:48, 16:48] = 1.0  # white square on black
    dets = [det([[16, 16, 48, 48]]) for _ in range(4)]
    out, new = augment_batch(img, dets, only(scale_p=1.0, scale=(0.5, 0.5)), g(2))
    assert out.shape == img.shape
    offsets = set()
    for i, d in enumerate(new):
        assert len(d) == 1
        x1, y1, x2, y2 = d.boxes[0].tolist()
        assert (x2 - x1, y2 - y1) == (16.0, 16.0)
        assert (out[i] > 0.99).sum() == (img[i] > 0.99).sum() / 4 == 3 * 16 * 16  # content shrinks 2x per side
        xi, yi, xe, ye = int(x1), int(y1), int(x2), int(y2)
        assert out[i, :, yi:ye, xi:xe].mean() > 0.99
        ring = out[i, :, yi - 4:ye + 4, xi - 4:xe + 4].clone()
        ring[:, 4:-4, 4:-4] = 0
        assert ring.sum() / (ring.numel() - 3 * 16 * 16) < 0.01  # black content around the box, not gray canvas
        assert (out[i] == 0.5).sum() == 3 * (64 * 64 - 32 * 32)  # the rest is the gray canvas
        offsets.add((xi, yi))
    assert len(offsets) > 1  # placement is random


def test_mosaic_quadrants_come_from_batch_images_and_boxes_follow() -> None:
    img = torch.stack([torch.full((3, 64, 64), c) for c in COLOURS])
    src_boxes = [[8, 8, 40, 24], [0, 0, 64, 64], [30, 40, 62, 60], [10, 2, 20, 62]]
    dets = [det([src_boxes[i]], tag=i) for i in range(4)]
    for seed in range(4):
        out, new = augment_batch(img, dets, only(mosaic=1.0), g(seed))
        for i in range(4):
            seen = []
            for qy in range(2):
                for qx in range(2):
                    quad = out[i, :, qy * 32:(qy + 1) * 32, qx * 32:(qx + 1) * 32]
                    c = quad[0, 0, 0].item()
                    assert torch.allclose(quad, torch.full_like(quad, c))
                    assert any(abs(c - k) < 1e-6 for k in COLOURS)
                    seen.append(min(range(4), key=lambda k, c=c: abs(COLOURS[k] - c)))
            assert sorted(seen) == [0, 1, 2, 3]  # B == 4: the image itself and the three others
            assert len(new[i]) == 4
            for box, label in zip(new[i].boxes.tolist(), new[i].labels.tolist(), strict=True):
                q = seen.index(label)
                ox, oy = (q % 2) * 32, (q // 2) * 32
                assert box == [ox + v / 2 if k % 2 == 0 else oy + v / 2 for k, v in enumerate(src_boxes[label])]
                ob = src_boxes[label]
                area = (box[2] - box[0]) * (box[3] - box[1])
                assert area == pytest.approx((ob[2] - ob[0]) * (ob[3] - ob[1]) / 4)
                # the box lies in the quadrant that shows its source image's colour
                cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
                assert out[i, 0, cy, cx].item() == pytest.approx(COLOURS[label])


@pytest.mark.parametrize("b", [1, 2, 3])
def test_mosaic_small_batches_repeat_images(b: int) -> None:
    img = torch.stack([torch.full((3, 32, 32), c) for c in COLOURS[:b]])
    out, new = augment_batch(img, [det([[0, 0, 32, 32]], tag=i) for i in range(b)], only(mosaic=1.0), g(b))
    for i in range(b):
        assert len(new[i]) == 4 and set(new[i].labels.tolist()) <= set(range(b))
        quads = {round(out[i, 0, y, x].item(), 4) for y in (0, 16) for x in (0, 16)}
        assert quads <= {round(c, 4) for c in COLOURS[:b]}


def test_mosaic_clips_and_drops_boxes_outside_their_quadrant() -> None:
    img = torch.rand(4, 3, 64, 64)
    # mostly outside the image (kept area < 20 %), too thin after halving, and a normal box
    dets = [det([[-60, 0, 10, 64], [10, 10, 13, 40], [0, 0, 64, 64]], tag=i) for i in range(4)]
    _, new = augment_batch(img, dets, only(mosaic=1.0), g(0))
    for d in new:
        assert len(d) == 4 and torch.equal(d.features[:, 0] - d.labels.float(), torch.full((4,), 6.0))


def test_cutout_drops_covered_boxes_and_keeps_rows_aligned() -> None:
    img = torch.zeros(4, 3, 64, 64)
    grid = [[x, y, x + 8, y + 8] for y in range(0, 64, 8) for x in range(0, 64, 8)]
    dets = [det(grid, tag=100 * i, feat_dim=2) for i in range(4)]
    dropped = 0
    for seed in range(3):
        out, new, origin = augment_batch_with_origin(img, dets, only(cutout=1.0), g(seed))
        for i, d in enumerate(new):
            gray = out[i, 0] == 0.5
            assert gray.any()  # every image got at least one rectangle
            rows = origin[i][:, 1]
            assert (origin[i][:, 0] == i).all()
            # kept boxes are unchanged grid cells, and every per-row field follows its box
            assert torch.equal(d.boxes, dets[i].boxes[rows])
            assert torch.equal(d.features, (rows[:, None] * 2 + torch.arange(2)).float() + 100 * i)
            assert torch.equal(d.objectness, rows.float() / 50) and torch.equal(d.class_prob, rows.float() / 25)
            assert torch.equal(d.scores, rows.float() / 100 + 100 * i)
            kept = set(rows.tolist())
            for k, (x1, y1, x2, y2) in enumerate(grid):
                cover = gray[y1:y2, x1:x2].float().mean().item()
                assert (k in kept) == (cover <= 0.6), (k, cover)
                dropped += cover == 1.0
    assert dropped > 0  # fully covered boxes occurred and were dropped


def test_gamma_gain_keeps_range_and_boxes() -> None:
    img = torch.rand(4, 3, 16, 16, generator=g(3))
    img[0] = 1.0
    dets = [det([[1, 1, 9, 9]], tag=i) for i in range(4)]
    out, new = augment_batch(img, dets, only(gamma_p=1.0, gain=(1.1, 1.1)), g(0))
    assert out.min() >= 0.0 and out.max() <= 1.0 and not torch.equal(out, img)
    assert torch.equal(out[0], img[0])  # 1 ** g * 1.1 clamps back to 1
    assert all(torch.equal(a.boxes, b.boxes) for a, b in zip(dets, new, strict=True))
    out, _ = augment_batch(img, dets, only(gamma_p=1.0, gamma=(0.5, 0.5), gain=(1.0, 1.0)), g(0))
    torch.testing.assert_close(out, img.sqrt())


def test_seeded_generator_is_reproducible() -> None:
    img = torch.rand(4, 3, 64, 64, generator=g(4))
    dets = [det([[4, 4, 30, 30], [20, 10, 60, 50], [40, 40, 44, 60]], tag=i) for i in range(4)]
    full = AugmentPolicy(flip=0.5, gamma_p=0.5, scale_p=0.5, mosaic=0.5, cutout=0.5)
    a_img, a = augment_batch(img, dets, full, g(7))
    b_img, b = augment_batch(img, dets, full, g(7))
    c_img, _ = augment_batch(img, dets, full, g(8))
    assert torch.equal(a_img, b_img) and not torch.equal(a_img, c_img)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.features, y.features)


@pytest.mark.parametrize("extras", [True, False])
def test_optional_fields_stay_row_consistent(extras: bool) -> None:
    img = torch.rand(4, 3, 64, 64, generator=g(5))
    dets = [det([[4, 4, 30, 30], [20, 10, 60, 50], [0, 0, 64, 64]], tag=i, feat_dim=None, extras=extras)
            for i in range(4)]
    for seed in range(4):
        _, new = augment_batch(img, dets, generator=g(seed))
        for d in new:
            assert d.features is None
            if extras:
                assert d.objectness is not None and d.class_prob is not None
                assert d.objectness.shape == d.class_prob.shape == d.scores.shape == (len(d),)
                torch.testing.assert_close(d.class_prob, 2 * d.objectness)  # same rows picked
            else:
                assert d.objectness is None and d.class_prob is None


def test_mosaic_refuses_to_mix_present_and_missing_fields() -> None:
    img = torch.rand(2, 3, 32, 32)
    dets = [det([[0, 0, 32, 32]], extras=True), det([[0, 0, 32, 32]], tag=1, extras=False)]
    with pytest.raises(ValueError, match="objectness"):
        augment_batch(img, dets, only(mosaic=1.0), g(0))


def test_empty_detections_keep_structure() -> None:
    img = torch.rand(4, 3, 32, 32)
    dets = [Detections.empty(feature_dim=5) for _ in range(4)]
    _, new = augment_batch(img, dets, AugmentPolicy(flip=1, gamma_p=1, scale_p=1, mosaic=1, cutout=1), g(0))
    for d in new:
        assert len(d) == 0 and d.boxes.shape == (0, 4) and d.features is not None and d.features.shape == (0, 5)


def test_gather_rows_follows_origin() -> None:
    img = torch.rand(4, 3, 64, 64, generator=g(6))
    dets = [det([[4, 4, 30, 30], [20, 10, 60, 50], [0, 0, 64, 64]], tag=i) for i in range(4)]
    u = [d.scores * 10 for d in dets]  # a per-row value kept outside Detections
    _, new, origin = augment_batch_with_origin(img, dets, generator=g(1))
    for d, v in zip(new, gather_rows(u, origin), strict=True):
        torch.testing.assert_close(v, d.scores * 10)


def test_policy_defaults_and_validation() -> None:
    p = AugmentPolicy()
    assert (p.flip, p.gamma_p, p.gamma, p.gain) == (0.5, 0.5, (0.5, 1.3), (0.8, 1.1))
    assert (p.scale_p, p.scale, p.mosaic, p.cutout) == (0.5, (0.5, 1.0), 0.8, 0.5)
    fg = AugmentPolicy.flip_gamma()
    assert (fg.flip, fg.gamma_p, fg.scale_p, fg.mosaic, fg.cutout) == (0.5, 0.5, 0.0, 0.0, 0.0)
    for bad in ({"mosaic": 1.5}, {"scale": (0.5, 1.2)}, {"gamma": (1.3, 0.5)}, {"gamma": (0.0, 1.0)}, {"p_flip": 1.0}):
        with pytest.raises(pydantic.ValidationError):
            AugmentPolicy(**bad)
