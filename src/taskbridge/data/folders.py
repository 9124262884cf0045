"""Folder datasets: plain images, and images with box labels (VOC XML, YOLO txt or COCO json).

A bad file never crashes a DataLoader worker deep inside PIL: with ``on_error="skip"`` the item
comes back as ``None`` after a warning naming the file, and the collate functions here drop
``None`` items (the batch records how many); with ``on_error="raise"`` the error names the file.
Items are never silently replaced by another image, so evaluation counts stay honest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from taskbridge.data.io import ImageReadError, list_images, read_image
from taskbridge.data.labels import (
    COCO80_NAMES,
    DAWN_YOLO_IDS,
    BoxAnnotation,
    LabelFormatError,
    read_coco_json,
    read_voc_xml,
    read_yolo_txt,
)
from taskbridge.data.transforms import LETTERBOX_FILL, as_hw, letterbox, letterbox_boxes

PathLike = str | os.PathLike[str]

YOLO_ID_PRESETS: dict[str, Mapping[int, str] | Sequence[str]] = {
    "coco80": COCO80_NAMES,  # Ultralytics COCO labels, 0-indexed
    "coco80-one-indexed": DAWN_YOLO_IDS,
    "dawn": DAWN_YOLO_IDS,
}


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


def resolve_files(source: PathLike | Sequence[PathLike]) -> list[Path]:
    """A folder (searched recursively, sorted) or an explicit list of files."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_file():
            return [p]
        return list_images(p)
    files = [Path(f) for f in source]
    if not files:
        raise ValueError("empty file list: give a folder or at least one image path")
    return files


class ImageFolder(Dataset):
    """Images of a folder (or a file list) as {"image": CHW float RGB [0, 1], "path": str}."""

    def __init__(
        self,
        root: PathLike | Sequence[PathLike],
        transform: Callable[[Tensor], Tensor] | None = None,
        on_error: str = "skip",
    ) -> None:
        _check_on_error(on_error)
        self.files = resolve_files(root)
        self.transform = transform
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.files[index]
        try:
            image = read_image(path)
        except (ImageReadError, FileNotFoundError) as err:
            if self.on_error == "raise":
                raise
            warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "path": str(path)}


class DetectionFolder(Dataset):
    """Images with box labels: {"image": CHW, "path": str, "annotation": BoxAnnotation}.

    Label files mirror the image tree: ``images_dir/a/b.jpg`` -> ``labels_dir/a/b.xml`` (voc) or
    ``.txt`` (yolo); for "coco", `labels_dir` is the json file and images are matched by
    ``file_name`` (relative path, else base name). Given a file list instead of a folder, label
    files are looked up by base name directly under `labels_dir`. `yolo_ids` says what YOLO class ids mean: a
    preset name ("coco80", "dawn" = COCO-80 one-indexed), a list of names or an {id: name} dict.
    A missing label file is an image without objects (`missing_label="empty"`), or "skip"/"error".
    `on_unknown` ("warn", "skip" = silent, "error") handles classes outside `class_names`.
    `transform(image, annotation) -> (image, annotation)` runs after reading.
    """

    def __init__(
        self,
        images_dir: PathLike | Sequence[PathLike],
        labels_dir: PathLike,
        label_format: str = "voc",
        class_names: Sequence[str] = COCO80_NAMES,
        yolo_ids: str | Mapping[int, str] | Sequence[str] = "coco80",
        on_error: str = "skip",
        on_unknown: str = "warn",
        missing_label: str = "empty",
        aliases: Mapping[str, str] | None = None,
        transform: Callable[[Tensor, BoxAnnotation], tuple[Tensor, BoxAnnotation]] | None = None,
    ) -> None:
        _check_on_error(on_error)
        if label_format not in ("voc", "yolo", "coco"):
            raise ValueError(f"label_format must be 'voc', 'yolo' or 'coco', got {label_format!r}")
        if missing_label not in ("empty", "skip", "error"):
            raise ValueError(f"missing_label must be 'empty', 'skip' or 'error', got {missing_label!r}")
        if isinstance(yolo_ids, str):
            if yolo_ids not in YOLO_ID_PRESETS:
                raise ValueError(f"unknown yolo_ids preset {yolo_ids!r}; one of {', '.join(YOLO_ID_PRESETS)}")
            yolo_ids = YOLO_ID_PRESETS[yolo_ids]
        self.images_root = Path(images_dir) if isinstance(images_dir, (str, os.PathLike)) else None
        self.files = resolve_files(images_dir)
        self.labels_dir = Path(labels_dir)
        self.label_format = label_format
        self.class_names = list(class_names)
        self.yolo_ids = yolo_ids
        self.on_error = on_error
        self.on_unknown = on_unknown
        self.missing_label = missing_label
        self.aliases = aliases
        self.transform = transform
        self._coco: dict[str, BoxAnnotation] | None = None
        if label_format == "coco":
            if not self.labels_dir.is_file():
                raise FileNotFoundError(f"label_format='coco' needs labels_dir to be the json file, got {self.labels_dir}")
            self._coco = read_coco_json(self.labels_dir, self.class_names, on_unknown, aliases)
        elif not self.labels_dir.is_dir():
            raise FileNotFoundError(f"labels folder not found: {self.labels_dir}")

    def __len__(self) -> int:
        return len(self.files)

    def _relative(self, path: Path) -> Path:
        if self.images_root is not None and self.images_root.is_dir():
            try:
                return path.relative_to(self.images_root)
            except ValueError:
                pass
        return Path(path.name)

    def label_path(self, image_path: PathLike) -> Path:
        """Where the label file of `image_path` is expected (voc/yolo)."""
        suffix = ".xml" if self.label_format == "voc" else ".txt"
        rel = self._relative(Path(image_path))
        return (self.labels_dir / rel).with_suffix(suffix)

    def read_annotation(self, image_path: PathLike, image_size: tuple[int, int]) -> BoxAnnotation | None:
        """Labels of one image (None: missing and `missing_label="skip"`)."""
        image_path = Path(image_path)
        if self._coco is not None:
            rel = self._relative(image_path).as_posix()
            ann = self._coco.get(rel, self._coco.get(image_path.name))
            if ann is None:
                return self._missing(f"{self.labels_dir} has no image entry '{rel}'", image_size)
            if ann.image_size != image_size:
                warnings.warn(f"{image_path}: size {image_size} differs from {ann.image_size} in {self.labels_dir}", stacklevel=2)
            return ann
        lp = self.label_path(image_path)
        if not lp.is_file():
            return self._missing(f"label file not found: {lp}", image_size)
        if self.label_format == "yolo":
            return read_yolo_txt(lp, image_size, self.yolo_ids, self.class_names, self.on_unknown, self.aliases)
        ann = read_voc_xml(lp, self.class_names, self.on_unknown, self.aliases, image_size=image_size)
        return ann

    def _missing(self, msg: str, image_size: tuple[int, int]) -> BoxAnnotation | None:
        if self.missing_label == "error":
            raise LabelFormatError(msg + " (missing_label='empty' treats such images as having no objects)")
        if self.missing_label == "skip":
            warnings.warn(msg + "; image skipped", stacklevel=3)
            return None
        return BoxAnnotation.empty(self.class_names, image_size)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.files[index]
        try:
            image = read_image(path)
            ann = self.read_annotation(path, (int(image.shape[1]), int(image.shape[2])))
        except (ImageReadError, LabelFormatError, FileNotFoundError) as err:
            if self.on_error == "raise":
                raise
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            return None
        if ann is None:
            return None
        if self.transform is not None:
            image, ann = self.transform(image, ann)
        return {"image": image, "path": str(path), "annotation": ann}


def collate_variable(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Batch of variable-sized items: lists, not stacks; `None` (skipped) items are dropped.

    Returns {"images": [CHW, ...], "paths": [...], "annotations": [...] (when present),
    "skipped": number of dropped items}. A batch may hold zero images if every file was bad.
    """
    items = [b for b in batch if b is not None]
    out: dict[str, Any] = {
        "images": [b["image"] for b in items],
        "paths": [b["path"] for b in items],
        "skipped": len(batch) - len(items),
    }
    if items and "annotation" in items[0]:
        out["annotations"] = [b["annotation"] for b in items]
    return out


class LetterboxCollate:
    """Collate that letterboxes every image to `size` and stacks them: detector-ready batches.

    Returns {"images": [B, 3, S, S], "metas": [LetterboxMeta], "paths", "skipped", and when labels
    are present "annotations" (original pixels) and "boxes" (list of [N, 4] in letterbox pixels)}.
    A picklable class, so it works with multi-process DataLoaders.
    """

    def __init__(
        self, size: int | Sequence[int] = 640, stride: int = 32, auto: bool = False, fill: float = LETTERBOX_FILL
    ) -> None:
        self.size, self.stride, self.auto, self.fill = size, stride, auto, fill

    def __call__(self, batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        out = collate_variable(batch)
        boxed = [letterbox(im, self.size, self.stride, self.auto, self.fill) for im in out["images"]]
        if self.auto and len({tuple(b[0].shape) for b in boxed}) > 1:
            raise ValueError("LetterboxCollate(auto=True) gave different sizes in one batch; use auto=False or batch size 1")
        out["images"] = torch.stack([b[0] for b in boxed]) if boxed else torch.zeros(0, 3, *as_hw(self.size))
        out["metas"] = [b[1] for b in boxed]
        if "annotations" in out:
            out["boxes"] = [letterbox_boxes(a.boxes, m) for a, m in zip(out["annotations"], out["metas"], strict=True)]
        return out
