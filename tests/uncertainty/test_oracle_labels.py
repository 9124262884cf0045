"""Oracle labels: the photo's boxes follow each training view (crop, resize, flip), DAWN's label files are
read as COCO classes, and VaT trains its degraded-side flows on them instead of pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskbridge.data.labels import LabelFormatError
from taskbridge.data.unpaired import UnpairedDataset, unpaired_collate, window_boxes
from taskbridge.uncertainty.oracle_labels import OracleLabels

BOX = (0.55, 0.30, 0.80, 0.70)  # x0, y0, x1, y1 as fractions of the photo


def photo_with_a_box(path: Path, h: int = 150, w: int = 240) -> Path:
    img = np.full((h, w, 3), 30, np.uint8)
    x0, y0, x1, y1 = BOX
    img[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = 230
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize("geometry", [
    {"resize": 96, "crop": "none", "size": 96},
    {"resize": 128, "crop": "random", "size": 96, "flip": True},
    {"crop": "random_resized", "size": 64, "flip": True, "crop_scale": (0.3, 1.0)},
    {"resize": 100, "keep_aspect": True, "crop": "center", "size": 80},
])
def test_the_box_follows_every_training_view(tmp_path: Path, geometry: dict) -> None:
    photo = photo_with_a_box(tmp_path / "a.png")
    ds = UnpairedDataset([photo], [photo], seed=3, **geometry)
    seen = 0
    for index in range(12):
        ds.set_epoch(index)
        item = ds[0]
        view = item["A"].mean(0)
        size = tuple(view.shape)
        boxes, keep = window_boxes(torch.tensor([BOX]), item["A_window"], item["A_flip"], size)
        inside = torch.zeros(size, dtype=torch.bool)
        if keep.all():
            x0, y0, x1, y1 = boxes[0].round().int().tolist()
            assert x1 - x0 >= 2 and y1 - y0 >= 2
            inside[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = True
            assert view[inside].mean() > 0.8  # the bright rectangle is where the box says
            seen += 1
        outside = torch.ones(size, dtype=torch.bool)
        if keep.all():
            outside[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False
        assert view[outside].mean() < 0.3 or not outside.any()
    assert seen >= 3


def test_dawn_labels_become_coco_detections_of_each_view(shared_data: Path, tmp_path: Path) -> None:
    dawn = shared_data / "dawn_fog"
    labels = OracleLabels(dawn / "yolo_labels")
    photos = sorted((dawn / "images").glob("*.jpg"))[:3]
    ds = UnpairedDataset(photos, photos, resize=160, crop="none", size=160, seed=0)
    batch = unpaired_collate([ds[i] for i in range(3)])
    dets = labels.detections(batch, (160, 160), "cpu")
    for photo, d in zip(photos, dets, strict=True):
        lines = [ln.split() for ln in (dawn / "yolo_labels" / f"{photo.stem}.txt").read_text().splitlines() if ln.strip()]
        assert len(d) == len(lines) > 0  # the whole photo: every box kept
        assert sorted(d.labels.tolist()) == sorted(int(ln[0]) - 1 for ln in lines)  # 1-indexed COCO ids
        assert bool((d.boxes >= 0).all() and (d.boxes <= 160).all()) and bool((d.scores == 1).all())
    visible = OracleLabels(dawn / "yolo_labels", min_size=12).detections(batch, (160, 160), "cpu")
    for d, v in zip(dets, visible, strict=True):
        short = torch.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])
        assert len(v) == int((short >= 12).sum())
    assert sum(len(v) for v in visible) < sum(len(d) for d in dets)  # DAWN's far cars are under 12 px at 160
    with pytest.raises(LabelFormatError, match="no label file .*nothing.txt"):
        labels.of_photo(str(tmp_path / "nothing.jpg"))
    with pytest.raises(ValueError, match="needs folder data"):
        labels.detections({"A_paths": ["x"]}, (160, 160), "cpu")
    with pytest.raises(FileNotFoundError, match="not a folder of YOLO label files"):
        OracleLabels(tmp_path / "missing")

