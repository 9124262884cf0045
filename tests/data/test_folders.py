"""Folder datasets on real data, the unpaired A/B sampler and file splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from taskbridge.data.folders import DetectionFolder, ImageFolder, LetterboxCollate, collate_variable
from taskbridge.data.labels import RTTS_NAMES, LabelFormatError
from taskbridge.data.splits import load_or_create_split, load_split, save_split, split_files, split_paths
from taskbridge.data.transforms import unletterbox_boxes
from taskbridge.data.unpaired import UnpairedDataset, unpaired_collate


def _dawn_files(shared_data: Path, n: int = 3) -> list[Path]:
    return sorted((shared_data / "dawn_fog" / "images").glob("*.jpg"))[:n]


def test_image_folder_real(shared_data: Path) -> None:
    ds = ImageFolder(shared_data / "coco8" / "images", transform=lambda x: x[:, :32, :32])
    assert len(ds) == 8
    batch = collate_variable([ds[0], ds[5]])
    assert [im.shape for im in batch["images"]] == [(3, 32, 32)] * 2 and batch["skipped"] == 0
    assert batch["paths"][0].endswith(".jpg")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(shared_data / "coco8" / "labels")
    with pytest.raises(ValueError, match="on_error"):
        ImageFolder(shared_data / "coco8" / "images", on_error="ignore")


def test_detection_folder_dawn_voc_equals_yolo(shared_data: Path) -> None:
    files = _dawn_files(shared_data)
    voc = DetectionFolder(files, shared_data / "dawn_fog" / "voc_xml", "voc", RTTS_NAMES, on_unknown="error")
    yolo = DetectionFolder(files, shared_data / "dawn_fog" / "yolo_labels", "yolo", RTTS_NAMES, yolo_ids="dawn",
                           on_unknown="error")
    for i in range(len(files)):
        a, b = voc[i], yolo[i]
        assert a["path"] == b["path"] and a["image"].shape == b["image"].shape
        assert a["annotation"].image_size == tuple(a["image"].shape[1:])
        assert a["annotation"].names() == b["annotation"].names() and len(a["annotation"]) > 0
        assert torch.allclose(a["annotation"].boxes, b["annotation"].boxes, atol=1.0)


@pytest.mark.filterwarnings("error")
def test_detection_folder_coco256_layout_and_letterbox_collate(shared_data: Path) -> None:
    root = shared_data / "coco256_street"
    ds = DetectionFolder(root / "images", root / "labels", "yolo", RTTS_NAMES, on_unknown="skip")  # 5 of 80 classes
    assert len(ds) == 149
    assert ds.label_path(ds.files[0]) == root / "labels" / "train2017" / f"{ds.files[0].stem}.txt"
    loader = DataLoader(torch.utils.data.Subset(ds, [0, 1, 2]), batch_size=3, collate_fn=LetterboxCollate(160))
    batch = next(iter(loader))
    assert batch["images"].shape == (3, 3, 160, 160) and batch["skipped"] == 0
    for ann, boxes, meta in zip(batch["annotations"], batch["boxes"], batch["metas"], strict=True):
        assert torch.allclose(unletterbox_boxes(boxes, meta), ann.boxes, atol=1e-3)
    assert sum(len(a) for a in batch["annotations"]) > 0


def test_detection_folder_coco_json(tmp_path: Path, shared_data: Path) -> None:
    folder = shared_data / "coco8" / "images" / "val"
    files = sorted(folder.glob("*.jpg"))[:2]
    doc = {
        "images": [{"id": 1, "file_name": files[0].name, "height": 640, "width": 481}],  # 000000000036.jpg
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [{"image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40]}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    ds = DetectionFolder(files, path, "coco", RTTS_NAMES, missing_label="empty")
    item = ds[0]
    assert item["annotation"].names() == ["car"] and item["annotation"].boxes.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert len(ds[1]["annotation"]) == 0  # not in the json: no objects
    strict = DetectionFolder(files, path, "coco", RTTS_NAMES, missing_label="error", on_error="raise")
    with pytest.raises(LabelFormatError, match="has no image entry"):
        strict[1]


def test_detection_folder_bad_arguments(shared_data: Path) -> None:
    files = _dawn_files(shared_data, 1)
    with pytest.raises(ValueError, match="label_format"):
        DetectionFolder(files, shared_data / "dawn_fog" / "voc_xml", "kitti")
    with pytest.raises(ValueError, match="yolo_ids preset"):
        DetectionFolder(files, shared_data / "dawn_fog" / "yolo_labels", "yolo", yolo_ids="coco91")
    with pytest.raises(FileNotFoundError, match="labels folder not found"):
        DetectionFolder(files, shared_data / "dawn_fog" / "nope", "voc")
    with pytest.raises(FileNotFoundError, match="json file"):
        DetectionFolder(files, shared_data / "dawn_fog" / "voc_xml", "coco")


# ------------------------------------------------------------------------------------------ unpaired


def _unpaired(shared_data: Path, **kw) -> UnpairedDataset:
    a = sorted((shared_data / "coco8" / "images" / "train").glob("*.jpg"))
    b = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))
    return UnpairedDataset(a, b, size=24, resize=48, **kw)


def _pairs(ds: UnpairedDataset) -> list[tuple[int, int]]:
    return [ds.pair_indices(i) for i in range(len(ds))]


def test_unpaired_pairing_changes_per_epoch_and_is_seeded(shared_data: Path) -> None:
    ds = _unpaired(shared_data, seed=3)
    e0 = _pairs(ds)
    ds.set_epoch(1)
    e1 = _pairs(ds)
    assert e0 != e1  # new pairing each epoch
    assert sorted(b for _, b in e0) == sorted(b for _, b in e1) == [0, 1, 2, 3]  # every B used once per epoch
    again = _unpaired(shared_data, seed=3)
    again.set_epoch(1)
    assert _pairs(again) == e1  # same seed, same epoch: same pairing
    other = _unpaired(shared_data, seed=4)
    assert any(_pairs(other) != _pairs(_unpaired(shared_data, seed=s)) for s in (3,))
    fixed = _unpaired(shared_data, seed=3, repair_each_epoch=False)
    fixed.set_epoch(5)
    assert _pairs(fixed) == e0  # VaT-reference mode: one shuffle for all epochs


def test_unpaired_items_deterministic_and_batched(shared_data: Path) -> None:
    ds = _unpaired(shared_data, seed=0, flip=True)
    ds.set_epoch(2)
    x, y = ds[1], _unpaired(shared_data, seed=0, flip=True)
    y.set_epoch(2)
    assert torch.equal(x["A"], y[1]["A"]) and torch.equal(x["B"], y[1]["B"])
    assert x["A"].shape == (3, 24, 24)
    loader = DataLoader(ds, batch_size=4, collate_fn=unpaired_collate)
    batch = next(iter(loader))
    assert batch["A"].shape == (4, 3, 24, 24) and batch["B"].shape == (4, 3, 24, 24)
    assert len(batch["A_paths"]) == 4 and len(batch["B_paths"]) == 4
    centre = _unpaired(shared_data, crop="center")
    assert torch.equal(centre[0]["A"], _unpaired(shared_data, crop="center", seed=9)[0]["A"])


def test_unpaired_sizes_and_errors(shared_data: Path) -> None:
    a = sorted((shared_data / "coco8" / "images" / "train").glob("*.jpg"))[:3]
    b = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))
    ds = UnpairedDataset(a, b, size=16, resize=20, keep_aspect=True)
    assert len(ds) == 4 and ds[3]["A_path"] == str(a[0])  # |A| < |B|: A cycles
    assert min(ds[0]["A"].shape[1:]) == 16
    no_crop = UnpairedDataset(a, b, crop="none")
    with pytest.raises(ValueError, match="different sizes"):
        unpaired_collate([no_crop[0], no_crop[1]])
    with pytest.raises(ValueError, match="crop"):
        UnpairedDataset(a, b, crop="left")
    with pytest.raises(ValueError, match="keep_aspect"):
        UnpairedDataset(a, b, resize=(10, 10), keep_aspect=True)


# ------------------------------------------------------------------------------------------- splits


def test_split_files_deterministic_disjoint_and_saved(tmp_path: Path, shared_data: Path) -> None:
    folder = shared_data / "dawn_fog" / "images"
    fr = {"train": 0.6, "val": 0.2, "test": 0.2}
    s1 = split_files(folder, fr, seed=0)
    assert [len(s1[k]) for k in ("train", "val", "test")] == [120, 40, 40]
    all_names = [n for v in s1.values() for n in v]
    assert len(set(all_names)) == 200 and all(not Path(n).is_absolute() for n in all_names)
    files = sorted(folder.glob("*.jpg"))
    assert split_files(list(reversed(files)), fr, seed=0, root=folder) == s1  # listing order does not matter
    assert split_files(folder, fr, seed=1) != s1
    path = save_split(s1, tmp_path / "dawn_split.json", seed=0, fractions=fr, root=folder)
    assert load_split(path) == s1
    assert load_or_create_split(path, files[:5], fr, seed=99) == s1  # the stored split wins
    paths = split_paths(s1, folder)
    assert all(p.is_file() for p in paths["test"])
    created = load_or_create_split(tmp_path / "new.json", folder, {"train": 0.5, "val": 0.5}, seed=2)
    assert load_split(tmp_path / "new.json") == created and len(created["train"]) == 100


def test_split_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_files(["a", "b"], {"train": 0.5, "val": 0.4})
    with pytest.raises(ValueError, match="duplicates"):
        split_files(["a", "a"], {"train": 1.0})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not a split file"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "overlap.json").write_text('{"splits": {"train": ["a", "b"], "val": ["b"]}}')
    with pytest.raises(ValueError, match="overlap"):
        load_split(tmp_path / "overlap.json")
    with pytest.raises(FileNotFoundError, match="missing under"):
        split_paths({"train": ["nope.jpg"]}, tmp_path)


def test_random_resized_crops_are_multi_scale_windows_of_the_photo(tmp_path: Path) -> None:
    from PIL import Image

    h, w = 120, 200
    rows = np.repeat(np.linspace(0, 255, h).astype(np.uint8)[:, None], w, axis=1)  # value = row
    Image.fromarray(np.stack([rows] * 3, -1)).save(tmp_path / "a.png")
    ds = UnpairedDataset([tmp_path / "a.png"], [tmp_path / "a.png"], size=32, crop="random_resized",
                         crop_scale=(0.25, 0.25), seed=1)
    spans = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        a = ds[0]["A"]
        assert a.shape == (3, 32, 32)
        spans.append(float(a[0, :, 0].max() - a[0, :, 0].min()))  # share of the photo's height in the window
    assert all(0.5 * 0.75**0.5 - 0.05 < s < 0.5 * (4 / 3) ** 0.5 + 0.05 for s in spans)  # area 1/4, aspect 3/4..4/3
    assert len({round(s, 3) for s in spans}) > 1  # the window changes with the epoch
    ds.set_epoch(0)
    assert torch.equal(ds[0]["A"], UnpairedDataset([tmp_path / "a.png"], [tmp_path / "a.png"], size=32,
                                                   crop="random_resized", crop_scale=(0.25, 0.25), seed=1)[0]["A"])
    with pytest.raises(ValueError, match="crop_scale"):
        UnpairedDataset([tmp_path / "a.png"], [tmp_path / "a.png"], size=32, crop="random_resized", crop_scale=(0.5, 0.2))
