"""Box labels from VOC XML, YOLO txt and COCO json, all read into one `BoxAnnotation`.

Every reader maps the file's class names (or ids) onto the caller's `class_names`, so a
detector's class list decides the label indices whatever format the data came in. Rules shared
by all readers (and tested on a bad-input set):

- boxes are xyxy float pixels of the image as displayed (EXIF orientation applied);
- boxes reaching outside the image are clipped to it; boxes of zero area after clipping are
  dropped with a warning naming the file;
- a class not in `class_names` is dropped with a warning naming the file (`on_unknown="warn"`,
  the default), dropped silently (`"skip"`: for evaluating a chosen subset of classes) or is an
  error (`"error"`); `aliases` maps other spellings first (VOC `motorbike` -> `motorcycle`). A YOLO
  id missing from `id_to_name` is a data error: it warns even under "skip";
- a malformed file or line raises `LabelFormatError` naming the file (and line) and the fix;
- an empty label file is an image without objects (N = 0), not an error.

VOC coordinates are taken as written (no 1-pixel shift): the DAWN XML and YOLO files agree to
1e-12 px that way.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

COCO80_NAMES: list[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
"""The 80 COCO detection classes in YOLO's 0-indexed order (`motorcycle`, not `motorbike`)."""

VOC20_NAMES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]
"""Pascal VOC classes in the official order."""

RTTS_NAMES: list[str] = ["person", "bicycle", "car", "motorcycle", "bus"]
"""The five classes of RTTS / VOC-haze and of the DAWN evaluation, in COCO order and spelling."""

VOC_TO_COCO_ALIASES: dict[str, str] = {
    "aeroplane": "airplane", "motorbike": "motorcycle", "sofa": "couch", "tvmonitor": "tv",
    "diningtable": "dining table", "pottedplant": "potted plant",
}
"""VOC spellings -> COCO spellings; applied only when the raw name is not itself in `class_names`."""


def coco_ids_one_indexed() -> dict[int, str]:
    """COCO-80 names keyed by 1-based position, the ids DAWN's darknet files use (1 person ... 8 truck).

    For every class DAWN contains (person, bicycle, car, motorcycle, bus, truck) these also equal
    the original COCO category ids, so either reading gives the same names.
    """
    return {i + 1: n for i, n in enumerate(COCO80_NAMES)}


DAWN_YOLO_IDS: dict[int, str] = coco_ids_one_indexed()
"""Id -> name map for `dawn_fog/yolo_labels` (COCO-80 ids shifted by one)."""


class LabelFormatError(ValueError):
    """A label file cannot be parsed; the message names the file (and line) and what to fix."""


class UnknownClassError(LabelFormatError):
    """A label names a class that is not in `class_names` and `on_unknown="error"`."""


@dataclass
class BoxAnnotation:
    """Boxes of one image: xyxy pixels, label indices into `class_names`, and VOC `difficult` flags."""

    boxes: Tensor  # [N, 4] float32 xyxy pixels
    labels: Tensor  # [N] int64 indices into class_names
    class_names: list[str]
    image_size: tuple[int, int]  # (h, w)
    difficult: Tensor = field(default=None)  # type: ignore[assignment]  # [N] bool, default all False

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        n = self.boxes.shape[0]
        if self.difficult is None:
            self.difficult = torch.zeros(n, dtype=torch.bool)
        self.difficult = torch.as_tensor(self.difficult, dtype=torch.bool).reshape(-1)
        if self.labels.shape[0] != n or self.difficult.shape[0] != n:
            raise ValueError(
                f"BoxAnnotation: {n} boxes but {self.labels.shape[0]} labels and {self.difficult.shape[0]} difficult flags"
            )
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.class_names = list(self.class_names)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(class_names: Sequence[str], image_size: tuple[int, int]) -> BoxAnnotation:
        return BoxAnnotation(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), list(class_names), image_size)

    def select(self, keep: Tensor) -> BoxAnnotation:
        """Subset of the boxes (boolean mask or index tensor)."""
        return BoxAnnotation(self.boxes[keep], self.labels[keep], self.class_names, self.image_size, self.difficult[keep])

    def names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels.tolist()]

    def to_cxcywh_normalized(self) -> Tensor:
        """[N, 4] cx, cy, w, h divided by image width/height (the YOLO training-target layout)."""
        h, w = self.image_size
        b = self.boxes
        scale = torch.tensor([w, h, w, h], dtype=b.dtype)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        return cxcywh / scale


# ----------------------------------------------------------------------------------------- helpers


ON_UNKNOWN = ("warn", "skip", "error")


def _check_on_unknown(on_unknown: str) -> None:
    if on_unknown not in ON_UNKNOWN:
        raise ValueError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}")


def resolve_class(
    name: str, class_names: Sequence[str], aliases: Mapping[str, str] | None = None
) -> int | None:
    """Index of `name` in `class_names` (exact, then via `aliases`, then case-insensitive), else None."""
    names = list(class_names)
    if name in names:
        return names.index(name)
    al = VOC_TO_COCO_ALIASES if aliases is None else aliases
    if name in al and al[name] in names:
        return names.index(al[name])
    for src, dst in al.items():  # the other direction: COCO spelling into a VOC class list
        if name == dst and src in names:
            return names.index(src)
    low = [n.lower() for n in names]
    if name.strip().lower() in low:
        return low.index(name.strip().lower())
    return None


def _unknown(where: str, name: str, class_names: Sequence[str], on_unknown: str, always_warn: bool = False) -> None:
    names = ", ".join(class_names) if len(class_names) <= 12 else f"{len(class_names)} names"
    msg = f"{where}: class {name!r} is not in class_names ({names})"
    if on_unknown == "error":
        raise UnknownClassError(msg + "; pass aliases={...} or on_unknown='skip'/'warn' to drop such boxes")
    if on_unknown == "warn" or always_warn:
        warnings.warn(msg + "; box skipped", stacklevel=3)


def _finish(
    path: str | os.PathLike[str],
    boxes: list[list[float]],
    labels: list[int],
    difficult: list[bool],
    class_names: Sequence[str],
    image_size: tuple[int, int],
) -> BoxAnnotation:
    """Clip to the image and drop zero-area boxes (warning naming the file)."""
    h, w = image_size
    if not boxes:
        return BoxAnnotation.empty(class_names, image_size)
    b = torch.tensor(boxes, dtype=torch.float64)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if not bool(keep.all()):
        bad = (~keep).nonzero().flatten().tolist()
        warnings.warn(
            f"{path}: dropped {len(bad)} box(es) with zero area inside the {w}x{h} image "
            f"(entries {', '.join(str(i + 1) for i in bad)})",
            stacklevel=3,
        )
    ann = BoxAnnotation(b.float(), torch.tensor(labels, dtype=torch.int64), list(class_names), image_size,
                        torch.tensor(difficult, dtype=torch.bool))
    return ann.select(keep)


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


# ------------------------------------------------------------------------------------------- VOC


def read_voc_xml(
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    on_unknown: str = "warn",
    aliases: Mapping[str, str] | None = None,
    image_size: tuple[int, int] | None = None,
    keep_difficult: bool = True,
) -> BoxAnnotation:
    """Pascal-VOC XML -> `BoxAnnotation`.

    `image_size` (h, w) overrides the XML `<size>` (pass the decoded image's size: some tools
    write 0 or a pre-rotation size there). Without either, the file is an error.
    """
    _check_on_unknown(on_unknown)
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise LabelFormatError(f"{path}: not valid VOC XML ({err}); fix or remove the file") from err
    try:
        w = int(float(root.findtext("size/width", "")))
        h = int(float(root.findtext("size/height", "")))
    except ValueError:
        w = h = 0
    if image_size is None:
        if w <= 0 or h <= 0:
            raise LabelFormatError(
                f"{path}: no usable <size><width>/<height>; pass image_size=(h, w) from the decoded image"
            )
        image_size = (h, w)
    elif w > 0 and h > 0 and (h, w) != tuple(image_size):
        warnings.warn(
            f"{path}: <size> says {w}x{h} but the image is {image_size[1]}x{image_size[0]} "
            "(EXIF rotation or a resized image?); boxes are clipped to the image",
            stacklevel=2,
        )
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for k, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            raise LabelFormatError(f"{path}: <object> #{k} has no <name> or no <bndbox>")
        try:
            coords = [float(bb.findtext(t, "")) for t in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as err:
            raise LabelFormatError(f"{path}: <object> #{k} ({name}) has a non-numeric <bndbox> ({err})") from err
        if not _finite(coords):
            raise LabelFormatError(f"{path}: <object> #{k} ({name}) has a non-finite coordinate {coords}")
        diff = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        if diff and not keep_difficult:
            continue
        idx = resolve_class(name, class_names, aliases)
        if idx is None:
            _unknown(f"{path} <object> #{k}", name, class_names, on_unknown)
            continue
        boxes.append(coords)
        labels.append(idx)
        difficult.append(diff)
    return _finish(path, boxes, labels, difficult, class_names, image_size)


# ------------------------------------------------------------------------------------------ YOLO


def _id_map(id_to_name: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(id_to_name, Mapping):
        return {int(k): str(v) for k, v in id_to_name.items()}
    return dict(enumerate(id_to_name))


def read_yolo_txt(
    path: str | os.PathLike[str],
    image_size: tuple[int, int],
    id_to_name: Mapping[int, str] | Sequence[str],
    class_names: Sequence[str],
    on_unknown: str = "warn",
    aliases: Mapping[str, str] | None = None,
) -> BoxAnnotation:
    """Darknet/YOLO txt (`cls cx cy w h`, normalised) -> `BoxAnnotation` in pixels of `image_size` (h, w).

    `id_to_name` says what the file's ids mean: `COCO80_NAMES` for Ultralytics COCO labels,
    `DAWN_YOLO_IDS` for DAWN. Lines with an odd number (>= 7) of values are polygon segments
    (Ultralytics segment format) and become their bounding box.
    """
    _check_on_unknown(on_unknown)
    path = Path(path)
    ids = _id_map(id_to_name)
    h, w = image_size
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LabelFormatError(f"{path}: not a text file ({err})") from err
    boxes: list[list[float]] = []
    labels: list[int] = []
    for ln, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        n = len(parts)
        if n != 5 and (n < 7 or n % 2 == 0):
            raise LabelFormatError(
                f"{path}:{ln}: expected 'class cx cy w h' (5 values) or a polygon 'class x1 y1 x2 y2 ...', "
                f"got {n} value(s): {line.strip()!r}"
            )
        try:
            cls_f = float(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError as err:
            raise LabelFormatError(f"{path}:{ln}: non-numeric value in {line.strip()!r}") from err
        if not _finite([cls_f, *vals]) or cls_f != int(cls_f):
            raise LabelFormatError(f"{path}:{ln}: class id must be an integer and values finite: {line.strip()!r}")
        cls = int(cls_f)
        if n == 5:
            cx, cy, bw, bh = vals
            if bw < 0 or bh < 0:
                raise LabelFormatError(f"{path}:{ln}: negative width/height in {line.strip()!r}")
            xyxy = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        else:
            xs, ys = vals[0::2], vals[1::2]
            xyxy = [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]
        if cls not in ids:
            _unknown(f"{path}:{ln}", f"id {cls} (not in id_to_name)", class_names, on_unknown, always_warn=True)
            continue
        idx = resolve_class(ids[cls], class_names, aliases)
        if idx is None:
            _unknown(f"{path}:{ln}", ids[cls], class_names, on_unknown)
            continue
        boxes.append(xyxy)
        labels.append(idx)
    return _finish(path, boxes, labels, [False] * len(boxes), class_names, image_size)


# ------------------------------------------------------------------------------------------ COCO


def read_coco_json(
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    on_unknown: str = "warn",
    aliases: Mapping[str, str] | None = None,
    crowd: str = "difficult",
) -> dict[str, BoxAnnotation]:
    """COCO instances json -> {image file_name: BoxAnnotation}; images without boxes map to empty ones.

    Category ids are resolved through the json's own `categories` names, so original COCO ids
    (1..90 with gaps) and re-numbered files both work. `crowd="difficult"` keeps iscrowd boxes
    flagged difficult (ignored by VOC-style AP, as COCO ignores crowd regions); "skip" drops them.
    """
    _check_on_unknown(on_unknown)
    if crowd not in ("difficult", "skip"):
        raise ValueError(f"crowd must be 'difficult' or 'skip', got {crowd!r}")
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelFormatError(f"{path}: a COCO json needs an 'images' list (and 'annotations', 'categories')")
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        images = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise LabelFormatError(f"{path}: malformed 'categories' or 'images' entry ({err!r})") from err
    per_image: dict[int, tuple[list[list[float]], list[int], list[bool]]] = {i: ([], [], []) for i in images}
    for k, ann in enumerate(data.get("annotations", [])):
        try:
            img_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as err:
            raise LabelFormatError(f"{path}: annotations[{k}] malformed ({err!r}); needs image_id, category_id, bbox") from err
        if img_id not in per_image:
            raise LabelFormatError(f"{path}: annotations[{k}] refers to unknown image_id {img_id}")
        if not _finite([x, y, bw, bh]) or bw < 0 or bh < 0:
            raise LabelFormatError(f"{path}: annotations[{k}] has an invalid bbox {ann['bbox']}")
        is_crowd = bool(ann.get("iscrowd", 0))
        if is_crowd and crowd == "skip":
            continue
        name = cats.get(cat_id)
        idx = None if name is None else resolve_class(name, class_names, aliases)
        if idx is None:
            _unknown(f"{path} annotations[{k}]", name or f"category_id {cat_id}", class_names, on_unknown)
            continue
        b, lab, dif = per_image[img_id]
        b.append([x, y, x + bw, y + bh])
        lab.append(idx)
        dif.append(is_crowd)
    out: dict[str, BoxAnnotation] = {}
    for img_id, (fname, h, w) in images.items():
        b, lab, dif = per_image[img_id]
        out[fname] = _finish(f"{path} [{fname}]", b, lab, dif, class_names, (h, w))
    return out
