"""The bad-input set: every reader meets corrupt, tiny, 16-bit, RGBA, grey and EXIF-rotated images and
empty / out-of-image / unknown-class / malformed labels, and each case has its expected result.

The files are generated into a temporary folder from one real coco8 photo (nothing is committed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from taskbridge.data.folders import DetectionFolder, ImageFolder, LetterboxCollate, collate_variable
from taskbridge.data.io import ImageReadError, read_image, try_read_image
from taskbridge.data.labels import (
    COCO80_NAMES,
    RTTS_NAMES,
    LabelFormatError,
    UnknownClassError,
    read_coco_json,
    read_voc_xml,
    read_yolo_txt,
)
from taskbridge.data.transforms import letterbox
from taskbridge.data.unpaired import UnpairedDataset, skipped_files, unpaired_collate

GREY16_VALUES = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)


def _voc(objects: list[tuple[str, tuple[float, float, float, float]]], w: int = 100, h: int = 50) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    img, lab = root / "images", root / "labels"
    img.mkdir()
    lab.mkdir()
    src = (shared_data / "coco8" / "images" / "val" / "000000000042.jpg").read_bytes()
    (img / "corrupt.jpg").write_bytes(src[: len(src) // 3])  # truncated JPEG
    (img / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    (img / "zero_bytes.png").write_bytes(b"")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(img / "one_pixel.png")
    Image.fromarray(GREY16_VALUES).save(img / "grey16.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(img / "rgba.png")
    Image.fromarray(np.full((6, 8), 77, np.uint8), "L").save(img / "grey.png")
    Image.new("RGB", (10, 20), (10, 20, 30)).save(img / "plain.bmp")
    Image.new("RGB", (10, 20), (10, 20, 30)).save(img / "plain.tiff")
    rot = Image.new("RGB", (40, 20), (0, 0, 255))
    rot.paste((255, 255, 0), (0, 0, 10, 20))  # yellow left quarter
    exif = rot.getexif()
    exif[0x0112] = 6  # orientation: display rotated 90 degrees clockwise
    rot.save(img / "exif_rot6.jpg", exif=exif, quality=95)
    # labels (YOLO next to the images' stems, plus standalone VOC/COCO cases)
    (lab / "one_pixel.txt").write_text("")  # empty label file
    (lab / "grey.txt").write_text("0 0.5 0.5 0.2 0.2\n5 1.2 0.5 0.5 0.5\n")  # second box partly outside
    (lab / "rgba.txt").write_text("0 0.5 0.5\n")  # malformed line
    (lab / "plain.txt").write_text("0 0.5 0.5 0.2 0.2\n77 0.5 0.5 0.2 0.2\n")  # 77 = teddy bear: not an RTTS class
    voc = root / "voc"
    voc.mkdir()
    (voc / "empty_file.xml").write_text("")
    (voc / "no_objects.xml").write_text(_voc([]))
    (voc / "outside.xml").write_text(_voc([("car", (-10, -5, 30, 20)), ("bus", (90, 40, 130, 80)), ("person", (120, 60, 150, 90))]))
    (voc / "unknown.xml").write_text(_voc([("car", (1, 1, 5, 5)), ("unicorn", (2, 2, 6, 6))]))
    (voc / "bad_number.xml").write_text(_voc([("car", (1, 1, "x", 5))]))  # type: ignore[list-item]
    (voc / "broken.xml").write_text("<annotation><size>")
    (voc / "no_size.xml").write_text("<annotation><object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                     "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    yolo = root / "yolo"
    yolo.mkdir()
    (yolo / "empty.txt").write_text("")
    (yolo / "blank_lines.txt").write_text("\n  \n\n")
    (yolo / "outside.txt").write_text("2 0.95 0.5 0.3 0.2\n2 1.5 1.5 0.2 0.2\n")
    (yolo / "unknown.txt").write_text("2 0.5 0.5 0.2 0.2\n500 0.5 0.5 0.2 0.2\n")
    (yolo / "short_line.txt").write_text("2 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2\n")
    (yolo / "text.txt").write_text("car 0.5 0.5 0.2 0.2\n")
    (yolo / "nan.txt").write_text("2 nan 0.5 0.2 0.2\n")
    (yolo / "float_class.txt").write_text("2.5 0.5 0.5 0.2 0.2\n")
    (yolo / "negative_size.txt").write_text("2 0.5 0.5 -0.2 0.2\n")
    (yolo / "polygon.txt").write_text("2 0.1 0.2 0.5 0.2 0.3 0.6\n")
    (yolo / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    coco = root / "coco"
    coco.mkdir()
    (coco / "empty.json").write_text("")
    (coco / "no_images.json").write_text(json.dumps({"annotations": []}))
    (coco / "cases.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 50, "width": 100}],
        "categories": [{"id": 3, "name": "car"}, {"id": 99, "name": "unicorn"}],
        "annotations": [
            {"image_id": 1, "category_id": 3, "bbox": [90, 40, 40, 40]},  # partly outside -> clipped
            {"image_id": 1, "category_id": 3, "bbox": [200, 10, 5, 5]},  # fully outside -> dropped
            {"image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown class
        ],
    }))
    (coco / "bad_image_id.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 5, "width": 5}], "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}],
    }))
    return root


# ----------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["corrupt.jpg", "garbage.jpg", "zero_bytes.png"])
def test_unreadable_image_error_names_file(bad: Path, name: str) -> None:
    path = bad / "images" / name
    with pytest.raises(ImageReadError, match=name):
        read_image(path)
    with pytest.warns(UserWarning, match=name):
        assert try_read_image(path, on_error="skip") is None


def test_one_pixel_png(bad: Path) -> None:
    x = read_image(bad / "images" / "one_pixel.png")
    assert x.shape == (3, 1, 1) and x[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    boxed, meta = letterbox(x, 64)  # a 1x1 image letterboxes to a full 64x64 image
    assert boxed.shape == (3, 64, 64) and meta.scale == 64.0 and meta.border == (0, 0, 0, 0)


def test_grey16_png_keeps_16_bit_precision(bad: Path) -> None:
    x = read_image(bad / "images" / "grey16.png")
    assert x.shape == (3, 2, 2) and x.dtype == torch.float32
    expected = torch.from_numpy(GREY16_VALUES.astype(np.float32) / 65535.0)
    for c in range(3):
        assert torch.allclose(x[c], expected, atol=1e-6)  # 1000/65535 survives: not squashed to 8 bits


def test_rgb16_png_is_read_as_rgb(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    a = np.zeros((3, 5, 3), np.uint16)
    a[..., 0], a[..., 1], a[..., 2] = 65535, 1000, 30000
    cv2.imwrite(str(tmp_path / "rgb16.png"), a[..., ::-1])  # OpenCV writes BGR
    x = read_image(tmp_path / "rgb16.png")
    assert x.shape == (3, 3, 5)
    # Pillow decodes 48-bit PNG at 8-bit precision: right channels, within one 8-bit level
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 1000 / 65535, 30000 / 65535]), atol=1 / 255)


def test_rgba_composited_over_grey(bad: Path) -> None:
    x = read_image(bad / "images" / "rgba.png")
    assert x.shape == (3, 4, 4)
    assert torch.allclose(x[:, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))  # opaque: unchanged
    assert torch.allclose(x[:, 3, 0], torch.tensor([0.5, 0.5, 0.5]))  # transparent: mid-grey


def test_grayscale_becomes_three_equal_channels(bad: Path) -> None:
    x = read_image(bad / "images" / "grey.png")
    assert x.shape == (3, 6, 8)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], torch.full((6, 8), 77 / 255))


@pytest.mark.parametrize("name", ["plain.bmp", "plain.tiff"])
def test_bmp_and_tiff(bad: Path, name: str) -> None:
    x = read_image(bad / "images" / name)
    assert x.shape == (3, 20, 10) and torch.allclose(x[:, 5, 5], torch.tensor([10, 20, 30]) / 255)


def test_exif_orientation_applied(bad: Path) -> None:
    x = read_image(bad / "images" / "exif_rot6.jpg")
    assert x.shape == (3, 40, 20)  # stored 40 wide x 20 high, displayed rotated 90 degrees
    # the yellow (stored left) quarter is at the top after a clockwise rotation
    assert x[2, 2, 10] < 0.2 and x[0, 2, 10] > 0.8 and x[2, 35, 10] > 0.8


# ------------------------------------------------------------------------------------------ labels


def test_empty_label_files_mean_no_objects(bad: Path) -> None:
    for name in ("empty.txt", "blank_lines.txt"):
        ann = read_yolo_txt(bad / "yolo" / name, (50, 100), COCO80_NAMES, COCO80_NAMES)
        assert len(ann) == 0 and ann.boxes.shape == (0, 4) and ann.image_size == (50, 100)
    ann = read_voc_xml(bad / "voc" / "no_objects.xml", COCO80_NAMES)
    assert len(ann) == 0 and ann.image_size == (50, 100)


def test_empty_or_broken_xml_is_an_error(bad: Path) -> None:
    for name in ("empty_file.xml", "broken.xml"):
        with pytest.raises(LabelFormatError, match=name):
            read_voc_xml(bad / "voc" / name, COCO80_NAMES)
    with pytest.raises(LabelFormatError, match=r"bad_number\.xml.*non-numeric"):
        read_voc_xml(bad / "voc" / "bad_number.xml", COCO80_NAMES)
    with pytest.raises(LabelFormatError, match=r"no_size\.xml.*image_size"):
        read_voc_xml(bad / "voc" / "no_size.xml", COCO80_NAMES)
    assert len(read_voc_xml(bad / "voc" / "no_size.xml", COCO80_NAMES, image_size=(10, 10))) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_voc_xml(bad / "voc" / "outside.xml", COCO80_NAMES, image_size=(100, 50))
    assert any("outside.xml: <size> says 100x50 but the image is 50x100" in str(w.message) for w in caught)


def test_voc_boxes_outside_clipped_or_dropped(bad: Path) -> None:
    with pytest.warns(UserWarning, match=r"outside\.xml: dropped 1 box"):
        ann = read_voc_xml(bad / "voc" / "outside.xml", COCO80_NAMES)
    assert ann.names() == ["car", "bus"]
    assert ann.boxes.tolist() == [[0.0, 0.0, 30.0, 20.0], [90.0, 40.0, 100.0, 50.0]]


def test_yolo_boxes_outside_clipped_or_dropped(bad: Path) -> None:
    with pytest.warns(UserWarning, match=r"outside\.txt: dropped 1 box"):
        ann = read_yolo_txt(bad / "yolo" / "outside.txt", (50, 100), COCO80_NAMES, COCO80_NAMES)
    assert ann.names() == ["car"]
    assert torch.allclose(ann.boxes, torch.tensor([[80.0, 20.0, 100.0, 30.0]]))


def test_unknown_class_skip_or_error(bad: Path) -> None:
    with pytest.warns(UserWarning, match="unicorn"):
        ann = read_voc_xml(bad / "voc" / "unknown.xml", COCO80_NAMES)
    assert ann.names() == ["car"]
    with pytest.raises(UnknownClassError, match=r"unknown\.xml.*unicorn"):
        read_voc_xml(bad / "voc" / "unknown.xml", COCO80_NAMES, on_unknown="error")
    with pytest.warns(UserWarning, match=r"unknown\.txt:2.*id 500"):
        ann = read_yolo_txt(bad / "yolo" / "unknown.txt", (50, 100), COCO80_NAMES, COCO80_NAMES)
    assert ann.names() == ["car"]
    with pytest.raises(UnknownClassError, match=r"unknown\.txt:2"):
        read_yolo_txt(bad / "yolo" / "unknown.txt", (50, 100), COCO80_NAMES, COCO80_NAMES, on_unknown="error")
    with pytest.raises(ValueError, match="on_unknown"):
        read_yolo_txt(bad / "yolo" / "unknown.txt", (50, 100), COCO80_NAMES, COCO80_NAMES, on_unknown="ignore")
    # "skip" drops names outside class_names silently (evaluating a subset of classes) ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_voc_xml(bad / "voc" / "unknown.xml", COCO80_NAMES, on_unknown="skip").names() == ["car"]
        plain = read_yolo_txt(bad / "labels" / "plain.txt", (50, 100), COCO80_NAMES, RTTS_NAMES, on_unknown="skip")
        assert plain.names() == ["person"]
    # ... but an id the id map does not know is a data error and still warns
    with pytest.warns(UserWarning, match="id 500"):
        read_yolo_txt(bad / "yolo" / "unknown.txt", (50, 100), COCO80_NAMES, COCO80_NAMES, on_unknown="skip")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("short_line.txt", r"short_line\.txt:2: expected 'class cx cy w h'"),
        ("text.txt", r"text\.txt:1: non-numeric"),
        ("nan.txt", r"nan\.txt:1: class id must be an integer and values finite"),
        ("float_class.txt", r"float_class\.txt:1: class id must be an integer"),
        ("negative_size.txt", r"negative_size\.txt:1: negative width/height"),
        ("binary.txt", r"binary\.txt: not a text file"),
    ],
)
def test_malformed_yolo_line_names_file_and_line(bad: Path, name: str, match: str) -> None:
    with pytest.raises(LabelFormatError, match=match):
        read_yolo_txt(bad / "yolo" / name, (50, 100), COCO80_NAMES, COCO80_NAMES)


def test_yolo_polygon_becomes_its_box(bad: Path) -> None:
    ann = read_yolo_txt(bad / "yolo" / "polygon.txt", (50, 100), COCO80_NAMES, COCO80_NAMES)
    assert torch.allclose(ann.boxes, torch.tensor([[10.0, 10.0, 50.0, 30.0]]))


def test_coco_json_cases(bad: Path) -> None:
    with pytest.raises(LabelFormatError, match=r"empty\.json: not valid JSON"):
        read_coco_json(bad / "coco" / "empty.json", COCO80_NAMES)
    with pytest.raises(LabelFormatError, match=r"no_images\.json.*'images' list"):
        read_coco_json(bad / "coco" / "no_images.json", COCO80_NAMES)
    with pytest.raises(LabelFormatError, match=r"bad_image_id\.json.*unknown image_id 7"):
        read_coco_json(bad / "coco" / "bad_image_id.json", COCO80_NAMES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_coco_json(bad / "coco" / "cases.json", COCO80_NAMES)
    messages = " | ".join(str(w.message) for w in caught)
    assert "unicorn" in messages and "dropped 1 box" in messages and "a.jpg" in messages
    assert got["a.jpg"].boxes.tolist() == [[90.0, 40.0, 100.0, 50.0]]
    with pytest.raises(UnknownClassError, match="unicorn"):
        read_coco_json(bad / "coco" / "cases.json", COCO80_NAMES, on_unknown="error")


# ------------------------------------------------------------------------------------ datasets


def test_image_folder_skips_or_raises(bad: Path) -> None:
    ds = ImageFolder(bad / "images", on_error="skip")
    assert len(ds) == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    bad_names = {"corrupt.jpg", "garbage.jpg", "zero_bytes.png"}
    assert {Path(str(w.message).split(": not a readable")[0].split()[-1]).name for w in caught} == bad_names
    assert sum(it is None for it in items) == 3
    batch = collate_variable(items)
    assert batch["skipped"] == 3 and len(batch["images"]) == 7
    assert all(im.shape[0] == 3 for im in batch["images"])
    boxed = LetterboxCollate(32)(items)
    assert boxed["images"].shape == (7, 3, 32, 32) and len(boxed["metas"]) == 7
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collate_variable)  # bad files inside a worker
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 3 and sum(len(b["images"]) for b in batches) == 7
    strict = ImageFolder(bad / "images", on_error="raise")
    idx = [p.name for p in strict.files].index("corrupt.jpg")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        strict[idx]


def test_detection_folder_bad_cases(bad: Path) -> None:
    ds = DetectionFolder(bad / "images", bad / "labels", "yolo", RTTS_NAMES, yolo_ids="coco80", on_error="skip")
    by_name = {p.name: i for i, p in enumerate(ds.files)}
    one = ds[by_name["one_pixel.png"]]  # empty label file
    assert one is not None and len(one["annotation"]) == 0 and one["annotation"].image_size == (1, 1)
    grey = ds[by_name["grey.png"]]  # 6x8 image; second box (bus) clipped to the right edge
    assert grey["annotation"].names() == ["person", "bus"]
    assert torch.allclose(grey["annotation"].boxes[1], torch.tensor([7.6, 1.5, 8.0, 4.5]), atol=1e-4)
    with pytest.warns(UserWarning, match=r"rgba\.txt:1"):
        assert ds[by_name["rgba.png"]] is None  # malformed label line -> skipped with the file named
    with pytest.warns(UserWarning, match="teddy bear"):
        plain = ds[by_name["plain.bmp"]]  # unknown class skipped
    assert plain["annotation"].names() == ["person"]
    assert len(ds[by_name["exif_rot6.jpg"]]["annotation"]) == 0  # no label file: no objects
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        assert ds[by_name["corrupt.jpg"]] is None
    strict = DetectionFolder(bad / "images", bad / "labels", "yolo", RTTS_NAMES, on_error="raise", missing_label="error")
    with pytest.raises(LabelFormatError, match=r"rgba\.txt:1"):
        strict[by_name["rgba.png"]]
    with pytest.raises(LabelFormatError, match=r"label file not found: .*exif_rot6\.txt"):
        strict[by_name["exif_rot6.jpg"]]


def test_unpaired_skips_unreadable_files(bad: Path, shared_data: Path) -> None:
    a_files = [bad / "images" / "corrupt.jpg", bad / "images" / "grey.png", bad / "images" / "one_pixel.png"]
    b_files = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[:2]
    ds = UnpairedDataset(a_files, b_files, size=16, seed=1)
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        items = [ds[i] for i in range(len(ds))]
    assert all(Path(it["A_path"]).name != "corrupt.jpg" for it in items)
    batch = unpaired_collate(items)
    assert batch["A"].shape == (3, 3, 16, 16) and batch["B"].shape == (3, 3, 16, 16)  # 1x1 upscaled to the crop
    strict = UnpairedDataset(a_files, b_files, size=16, seed=1, on_error="raise")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        strict[0]
    hopeless = UnpairedDataset([bad / "images" / "garbage.jpg"], b_files, size=16)
    with pytest.warns(UserWarning, match="garbage.jpg"), pytest.raises(ImageReadError, match="no readable image left on side A"):
        hopeless[0]


def test_skip_log_lists_each_file_once_and_survives_a_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "skipped.jsonl"
    assert skipped_files(log) == []
    a = {"file": "a.jpg", "side": "A", "reason": "a.jpg: truncated"}
    b = {"file": "b.png", "side": "B", "reason": "b.png: empty file"}
    log.write_text("\n".join(json.dumps(e) for e in (a, b, a)) + '\n{"file": "c.j')  # two workers met a.jpg; kill -9
    assert skipped_files(log) == [a, b]
