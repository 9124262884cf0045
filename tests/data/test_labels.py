"""Label readers on the real shared data: DAWN VOC vs YOLO, coco256_street YOLO, a COCO json."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from taskbridge.data.labels import (
    COCO80_NAMES,
    DAWN_YOLO_IDS,
    RTTS_NAMES,
    VOC20_NAMES,
    BoxAnnotation,
    coco_ids_one_indexed,
    read_coco_json,
    read_voc_xml,
    read_yolo_txt,
    resolve_class,
)

DAWN_STEMS = ["foggy-001", "foggy-002", "haze-011", "mist-002"]


def test_coco80_names() -> None:
    assert len(COCO80_NAMES) == 80 and len(set(COCO80_NAMES)) == 80
    assert COCO80_NAMES[3] == "motorcycle" and COCO80_NAMES[5] == "bus" and COCO80_NAMES[79] == "toothbrush"
    ids = coco_ids_one_indexed()
    assert ids == DAWN_YOLO_IDS
    assert [ids[i] for i in (1, 2, 3, 4, 6, 8)] == ["person", "bicycle", "car", "motorcycle", "bus", "truck"]


def test_resolve_class_aliases() -> None:
    assert resolve_class("motorbike", COCO80_NAMES) == 3  # VOC spelling into a COCO list
    assert resolve_class("motorcycle", VOC20_NAMES) == VOC20_NAMES.index("motorbike")  # and back
    assert resolve_class("Car", RTTS_NAMES) == 2
    assert resolve_class("truck", RTTS_NAMES) is None
    assert resolve_class("motorbike", COCO80_NAMES, aliases={}) is None


@pytest.mark.parametrize("stem", DAWN_STEMS)
def test_dawn_voc_and_yolo_agree(shared_data: Path, stem: str) -> None:
    """The two DAWN label formats give the same boxes (within 1 px) once ids are read as 1-indexed COCO."""
    root = shared_data / "dawn_fog"
    voc = read_voc_xml(root / "voc_xml" / f"{stem}.xml", COCO80_NAMES)
    assert len(voc) > 0
    yolo = read_yolo_txt(root / "yolo_labels" / f"{stem}.txt", voc.image_size, DAWN_YOLO_IDS, COCO80_NAMES)
    assert voc.names() == yolo.names()
    assert torch.allclose(voc.boxes, yolo.boxes, atol=1.0)
    # reading the ids 0-indexed (the usual YOLO assumption) gets the classes wrong: that is what the map fixes
    wrong = read_yolo_txt(root / "yolo_labels" / f"{stem}.txt", voc.image_size, COCO80_NAMES, COCO80_NAMES)
    assert wrong.names() != voc.names()


def test_dawn_voc_box_values(shared_data: Path) -> None:
    ann = read_voc_xml(shared_data / "dawn_fog" / "voc_xml" / "foggy-001.xml", RTTS_NAMES)
    assert ann.image_size == (675, 1280)
    assert ann.names() == ["car"]
    assert ann.boxes.tolist() == [[462.0, 467.0, 601.0, 598.0]]
    assert ann.boxes.dtype == torch.float32 and ann.labels.dtype == torch.int64
    assert ann.difficult.tolist() == [False]


def test_dawn_voc_all_files_clean(shared_data: Path) -> None:
    """All 200 DAWN XMLs parse without warnings; truck is skipped when not in the class list."""
    files = sorted((shared_data / "dawn_fog" / "voc_xml").glob("*.xml"))
    assert len(files) == 200
    n_all = n_rtts = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in files:
            n_all += len(read_voc_xml(f, COCO80_NAMES))
    with pytest.warns(UserWarning, match="truck"):
        for f in files:
            n_rtts += len(read_voc_xml(f, RTTS_NAMES))
    assert n_all == 1314  # README: car 1053, person 84, bus 49, bicycle 13, motorcycle 12, truck ~100 (103)
    assert n_rtts == 1314 - 103


def test_coco256_street_yolo(shared_data: Path) -> None:
    root = shared_data / "coco256_street"
    files = sorted((root / "labels" / "train2017").glob("*.txt"))
    assert files
    total = 0
    for f in files[:10]:
        ann = read_yolo_txt(f, (480, 640), COCO80_NAMES, COCO80_NAMES)
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        assert len(ann) == len(lines)
        assert (ann.boxes[:, 2] > ann.boxes[:, 0]).all() and (ann.boxes[:, 3] > ann.boxes[:, 1]).all()
        assert ann.boxes[:, 0::2].max() <= 640 and ann.boxes[:, 1::2].max() <= 480
        total += len(ann)
    assert total > 10
    # one line checked by hand: first line of the first file
    first = files[0].read_text().split("\n")[0].split()
    cx, cy, w, h = (float(v) for v in first[1:])
    ann = read_yolo_txt(files[0], (100, 200), COCO80_NAMES, COCO80_NAMES)
    assert ann.labels[0].item() == int(first[0])
    expect = torch.tensor([(cx - w / 2) * 200, (cy - h / 2) * 100, (cx + w / 2) * 200, (cy + h / 2) * 100])
    assert torch.allclose(ann.boxes[0], expect.clamp(min=0).minimum(torch.tensor([200, 100, 200, 100.0])), atol=1e-3)


def test_coco_json_matches_yolo(tmp_path: Path, shared_data: Path) -> None:
    """A COCO json built from coco8 YOLO labels reads back to the same boxes, crowd -> difficult."""
    files = sorted((shared_data / "coco8" / "labels" / "val").glob("*.txt"))
    size = (480, 640)
    coco_ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
                33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
                60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
    doc: dict = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in zip(coco_ids, COCO80_NAMES, strict=True)]}
    expected: dict[str, BoxAnnotation] = {}
    for k, f in enumerate(files):
        ann = read_yolo_txt(f, size, COCO80_NAMES, COCO80_NAMES)
        name = f"val/{f.stem}.jpg"
        expected[name] = ann
        doc["images"].append({"id": k, "file_name": name, "height": size[0], "width": size[1]})
        for j, (b, lab) in enumerate(zip(ann.boxes.tolist(), ann.labels.tolist(), strict=True)):
            doc["annotations"].append({"id": len(doc["annotations"]), "image_id": k, "category_id": coco_ids[lab],
                                       "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": int(j == 0)})
    doc["images"].append({"id": 99, "file_name": "val/no_boxes.jpg", "height": 10, "width": 20})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    got = read_coco_json(path, COCO80_NAMES)
    assert set(got) == {*expected, "val/no_boxes.jpg"}
    assert len(got["val/no_boxes.jpg"]) == 0 and got["val/no_boxes.jpg"].image_size == (10, 20)
    for name, ann in expected.items():
        assert torch.allclose(got[name].boxes, ann.boxes, atol=1e-3)
        assert got[name].labels.tolist() == ann.labels.tolist()
        assert got[name].difficult.tolist() == [True] + [False] * (len(ann) - 1)
    skipped = read_coco_json(path, COCO80_NAMES, crowd="skip")
    assert sum(len(a) for a in skipped.values()) == sum(len(a) for a in expected.values()) - len(expected)


def test_box_annotation_helpers() -> None:
    ann = BoxAnnotation(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([1]), ["a", "b"], (40, 20))
    assert torch.allclose(ann.to_cxcywh_normalized(), torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert ann.names() == ["b"] and len(ann.select(torch.tensor([False]))) == 0
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        BoxAnnotation(torch.zeros(1, 4), torch.zeros(2), ["a"], (1, 1))
