"""Properties over many generated inputs (hypothesis): label parsers never fail but by a LabelFormatError,
boxes stay inside their image, and the letterbox and its box mappings agree with each other."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskbridge.data.labels import COCO80_NAMES, LabelFormatError, read_voc_xml, read_yolo_txt
from taskbridge.data.transforms import letterbox, letterbox_boxes, scale_boxes, unletterbox_boxes

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = list(COCO80_NAMES)
sizes = st.tuples(st.integers(1, 3000), st.integers(1, 3000))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10, 10).map(float))


def _write(text: str | bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with open(fd, "wb") as fh:
        fh.write(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    return Path(name)


def _inside(ann, hw: tuple[int, int]) -> None:
    h, w = hw
    b = ann.boxes
    assert torch.isfinite(b).all()
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()  # no empty or inverted box survives


line = st.lists(numbers, min_size=0, max_size=9).map(lambda v: " ".join(f"{x:g}" for x in v))
yolo_text = st.one_of(st.lists(line, max_size=6).map("\n".join), st.text(max_size=80))


@FAST
@given(text=yolo_text, hw=sizes)
def test_yolo_labels_parse_or_say_which_line(text: str, hw: tuple[int, int]) -> None:
    path = _write(text, ".txt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = read_yolo_txt(path, hw, NAMES, NAMES)
    except LabelFormatError as err:
        assert str(path) in str(err)  # the message names the file
    else:
        _inside(ann, hw)
    finally:
        path.unlink()


def _voc(boxes: list[tuple[float, float, float, float]], names: list[str], w: int, h: int) -> str:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
                   "</bndbox></object>" for (a, b, c, d), n in zip(boxes, names, strict=False))
    return f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"


voc_text = st.one_of(
    st.builds(_voc, st.lists(st.tuples(numbers, numbers, numbers, numbers), max_size=5),
              st.lists(st.sampled_from(["car", "person", "bus", "spaceship", ""]), max_size=5),
              st.integers(-5, 4000), st.integers(-5, 4000)),
    st.text(max_size=120),
)


@FAST
@given(text=voc_text, hw=sizes)
def test_voc_labels_parse_or_say_why(text: str, hw: tuple[int, int]) -> None:
    path = _write(text, ".xml")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = read_voc_xml(path, NAMES, image_size=hw)
    except LabelFormatError as err:
        assert str(path) in str(err)
    else:
        _inside(ann, hw)
    finally:
        path.unlink()


@FAST
@given(hw=sizes, size=st.integers(1, 40).map(lambda k: 32 * k), auto=st.booleans(),
       box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_letterbox_and_its_box_mappings_agree(hw: tuple[int, int], size: int, auto: bool,
                                             box: tuple[float, float, float, float]) -> None:
    h, w = hw
    img = torch.zeros(3, h, w)
    out, meta = letterbox(img, size, stride=32, auto=auto)
    oh, ow = out.shape[-2:]
    assert max(oh, ow) <= size and (not auto or (oh % 32, ow % 32) == (0, 0))
    assert meta.new_size == (oh, ow) and meta.orig_size == (h, w)
    left, top, right, bottom = meta.border
    assert left + right + round(w * meta.scale) == ow or left + right + max(1, round(w * meta.scale)) == ow
    x0, x1 = sorted((box[0] * w, box[2] * w))
    y0, y1 = sorted((box[1] * h, box[3] * h))
    boxes = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float64)
    there = letterbox_boxes(boxes, meta)
    assert torch.allclose(unletterbox_boxes(there, meta), boxes, atol=1e-6 * max(h, w))  # exact inverse
    back = scale_boxes(there, (oh, ow), (h, w))  # YOLOv5's inverse: within a pixel of the original geometry
    assert (back - boxes).abs().max() <= 1.0 / meta.scale + 1e-6
    assert (back[:, 0::2] >= 0).all() and (back[:, 0::2] <= w).all() and (back[:, 1::2] <= h).all()
