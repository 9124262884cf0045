"""Letterbox geometry = YOLOv5's, box round trips, resize and pad helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.data.labels import COCO80_NAMES, read_yolo_txt
from taskbridge.data.transforms import (
    LETTERBOX_FILL,
    letterbox,
    letterbox_boxes,
    pad_to_multiple,
    resize_with_boxes,
    unletterbox_boxes,
)

# (h, w, size, auto) -> (output h, w, border left/top/right/bottom, (dw/2, dh/2)); the shapes, ratios and pads
# were produced by yolov5==7.0.14 `utils.augmentations.letterbox` (our implementation matched it on 1,200
# random sizes); they pin the rounding rules: round() half-to-even, the -0.1/+0.1 split, auto = mod stride.
YOLOV5_CASES = [
    (909, 1280, 640, False, (640, 640), (0, 93, 0, 93), (0.0, 93.0)),
    (789, 862, 320, False, (320, 320), (0, 13, 0, 14), (0.0, 13.5)),
    (789, 862, (480, 640), False, (480, 640), (58, 0, 58, 0), (58.0, 0.0)),
    (1048, 996, 640, False, (640, 640), (16, 0, 16, 0), (16.0, 0.0)),
    (909, 1280, 640, True, (480, 640), (0, 13, 0, 13), (0.0, 13.0)),
    (83, 531, 640, True, (128, 640), (0, 14, 0, 14), (0.0, 14.0)),
]


@pytest.mark.parametrize(("h", "w", "size", "auto", "out_hw", "border", "pad"), YOLOV5_CASES)
def test_letterbox_geometry_matches_yolov5(h: int, w: int, size, auto: bool, out_hw, border, pad) -> None:
    x = torch.rand(3, h, w)
    y, meta = letterbox(x, size, stride=32, auto=auto)
    assert tuple(y.shape[-2:]) == out_hw == meta.new_size
    assert meta.border == border
    assert (meta.pad_left, meta.pad_top) == pad
    assert meta.orig_size == (h, w)
    left, top, right, bottom = border
    assert torch.all(y[:, :top] == LETTERBOX_FILL) and torch.all(y[:, :, :left] == LETTERBOX_FILL)
    assert torch.all(y[:, y.shape[1] - bottom :] == LETTERBOX_FILL)
    assert torch.all(y[:, :, y.shape[2] - right :] == LETTERBOX_FILL)


def test_letterbox_pixels_match_opencv_linear(shared_data: Path) -> None:
    """The resize is OpenCV INTER_LINEAR arithmetic (what YOLOv5 uses), up to 8-bit rounding."""
    cv2 = pytest.importorskip("cv2")
    x = read_image(shared_data / "coco8" / "images" / "val" / "000000000042.jpg")
    y, meta = letterbox(x, 320)
    u8 = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    h, w = meta.orig_size
    ref = cv2.resize(u8, (round(w * meta.scale), round(h * meta.scale)), interpolation=cv2.INTER_LINEAR)
    left, top, right, bottom = meta.border
    ours = y[:, top : y.shape[1] - bottom, left : y.shape[2] - right].permute(1, 2, 0).numpy() * 255
    assert ours.shape == ref.shape
    assert np.abs(ours - ref.astype(np.float32)).max() <= 1.0


def test_letterbox_box_round_trip(shared_data: Path) -> None:
    path = shared_data / "coco8" / "images" / "val" / "000000000042.jpg"
    x = read_image(path)
    ann = read_yolo_txt(shared_data / "coco8" / "labels" / "val" / "000000000042.txt", tuple(x.shape[1:]),
                        COCO80_NAMES, COCO80_NAMES)
    assert len(ann) > 0
    for size, auto in ((640, False), (320, True), ((256, 512), False)):
        y, meta = letterbox(x, size, auto=auto)
        boxed = letterbox_boxes(ann.boxes, meta)
        assert torch.allclose(unletterbox_boxes(boxed, meta), ann.boxes, atol=1e-3)
        assert (boxed[:, 0::2] >= meta.border[0] - 0.5).all() and (boxed[:, 2] <= y.shape[-1] - meta.border[2] + 0.5).all()
        assert (boxed[:, 1::2] >= meta.border[1] - 0.5).all() and (boxed[:, 3] <= y.shape[-2] - meta.border[3] + 0.5).all()


def test_letterbox_box_maps_pixel_content() -> None:
    """A white square drawn in the original lands where letterbox_boxes says it does."""
    x = torch.zeros(3, 100, 200)
    x[:, 20:60, 50:90] = 1.0
    y, meta = letterbox(x, 128)
    box = letterbox_boxes(torch.tensor([[50.0, 20.0, 90.0, 60.0]]), meta)[0]
    x0, y0, x1, y1 = (int(round(v)) for v in box.tolist())
    assert y[0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].min() > 0.99
    assert y[0, y0 - 2, x0 - 2] < 0.01 and y[0, y1 + 2, x1 + 2] < 0.01


def test_letterbox_batch_and_no_scaleup() -> None:
    x = torch.rand(2, 3, 50, 100)
    y, meta = letterbox(x, 640, scaleup=False)
    assert y.shape == (2, 3, 640, 640) and meta.scale == 1.0 and meta.border == (270, 295, 270, 295)
    with pytest.raises(ValueError, match="CHW or NCHW"):
        letterbox(torch.rand(50, 100))


def test_resize_with_boxes() -> None:
    x = torch.rand(3, 100, 200)
    boxes = torch.tensor([[10.0, 20.0, 110.0, 80.0]])
    y, b = resize_with_boxes(x, boxes, (50, 50))
    assert y.shape == (3, 50, 50) and torch.allclose(b, torch.tensor([[2.5, 10.0, 27.5, 40.0]]))
    y, b = resize_with_boxes(x, boxes, 100, keep_aspect=True)
    assert y.shape == (3, 50, 100) and torch.allclose(b, boxes / 2)
    assert resize_with_boxes(x, None, 10)[1] is None


def test_pad_to_multiple() -> None:
    x = torch.rand(2, 3, 30, 45)
    y = pad_to_multiple(x, 16)
    assert y.shape == (2, 3, 32, 48) and torch.equal(y[..., :30, :45], x) and y[..., 30:, :].abs().sum() == 0
    r = pad_to_multiple(x[0], 16, mode="reflect")
    assert r.shape == (3, 32, 48) and torch.equal(r[:, 30, :45], x[0, :, 28, :])
    tiny = pad_to_multiple(torch.rand(1, 3, 2, 2), 8, mode="reflect")  # too small to mirror: replicate
    assert tiny.shape == (1, 3, 8, 8)
    stacked = pad_to_multiple([torch.rand(3, 10, 20), torch.rand(3, 17, 5)], 4)
    assert stacked.shape == (2, 3, 20, 20)
    assert pad_to_multiple(torch.rand(3, 32, 32), 32).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)
