"""Evaluation datasets: labelled detection folders (DAWN VOC layout, Ultralytics YOLO layout) and CIFAR npz.

Layouts recognised by `DetectionFolder` (the label *names* are kept; `ClassMap` decides what is evaluated):
- DAWN: `root/images/*.jpg` + `root/voc_xml/<stem>.xml` (preferred) or `root/yolo_labels/<stem>.txt`
  with 1-indexed COCO ids;
- Ultralytics: `root/images/<split>/*.jpg` + `root/labels/<split>/<stem>.txt` with 0-indexed COCO-80 ids
  (coco8, coco256_street); `split=None` takes every split.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from taskbridge.data.io import list_images, read_image
from taskbridge.data.labels import (
    COCO80_NAMES,
    DAWN_YOLO_IDS,
    VOC_TO_COCO_ALIASES,
    read_voc_xml,
    read_yolo_txt,
)


@dataclass
class DetectionSample:
    """One labelled image: CHW [0, 1] RGB, xyxy pixel boxes, label names, VOC difficult flags."""

    image: Tensor
    boxes: Tensor
    names: list[str]
    difficult: Tensor
    path: str


class DetectionFolder:
    """A folder of images with box labels, read lazily one image at a time."""

    def __init__(self, root: str | os.PathLike[str], split: str | None = None, label_format: str = "auto",
                 names: Sequence[str] | Mapping[int, str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"evaluation data folder not found: {self.root}")
        self.names = names
        self.format = label_format
        self.items: list[tuple[Path, Path | None]] = []
        if label_format == "auto":
            if (self.root / "voc_xml").is_dir():
                self.format = "voc"
            elif (self.root / "yolo_labels").is_dir():
                self.format = "dawn-yolo"
            elif (self.root / "labels").is_dir():
                self.format = "yolo"
            else:
                raise ValueError(
                    f"{self.root}: no labels found; expected voc_xml/ or yolo_labels/ next to images/ (DAWN layout) "
                    "or images/<split>/ + labels/<split>/ (Ultralytics layout)"
                )
        img_root = self.root / "images"
        if not img_root.is_dir():
            raise FileNotFoundError(f"{self.root}: expected an images/ folder")
        if split and self.format != "yolo":
            raise ValueError(
                f"split '{split}': {self.root} is a {self.format} folder without split sub-folders; a split "
                "applies to the Ultralytics layout (images/<split>/). For the parts of a split file use "
                "subset FILE.json:PART (--subset), e.g. recipes/splits/dawn_fog.json:test")
        if self.format in ("voc", "dawn-yolo"):
            lab_dir, suffix = (self.root / "voc_xml", ".xml") if self.format == "voc" else (self.root / "yolo_labels", ".txt")
            for img in list_images(img_root):
                self.items.append((img, lab_dir / f"{img.stem}{suffix}"))
        elif self.format == "yolo":
            splits = [split] if split else sorted(p.name for p in img_root.iterdir() if p.is_dir()) or [""]
            for s in splits:
                folder = img_root / s if s else img_root
                if not folder.is_dir():
                    raise FileNotFoundError(f"{folder}: split '{s}' not found")
                for img in list_images(folder):
                    self.items.append((img, self.root / "labels" / s / f"{img.stem}.txt"))
        else:
            raise ValueError(f"label_format '{label_format}' unknown; one of auto, voc, dawn-yolo, yolo")
        if not self.items:
            raise ValueError(f"{self.root}: no images found")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> DetectionSample:
        img_path, lab_path = self.items[i]
        image = read_image(img_path)
        hw = (int(image.shape[1]), int(image.shape[2]))
        vocab = list(COCO80_NAMES)
        if lab_path is None or not lab_path.is_file():  # an image without a label file has no objects
            boxes, labels, diff = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
        else:
            if self.format == "voc":
                ann = read_voc_xml(lab_path, vocab, aliases=VOC_TO_COCO_ALIASES, image_size=hw)
            else:
                ids = self.names if self.names is not None else (DAWN_YOLO_IDS if self.format == "dawn-yolo" else COCO80_NAMES)
                ann = read_yolo_txt(lab_path, hw, ids, vocab)
            boxes, labels, diff = ann.boxes, ann.labels, ann.difficult
        return DetectionSample(image, boxes, [vocab[j] for j in labels.tolist()], diff, str(img_path))


@dataclass
class ClassificationArrays:
    """Images [N, 3, H, W] float [0, 1], labels [N] int64, class names."""

    images: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_cifar_npz(path: str | os.PathLike[str]) -> ClassificationArrays:
    """The shared CIFAR-10 subset: an .npz with `images` uint8 [N,32,32,3], `labels`, `classes`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if len(files) != 1:
            raise ValueError(f"{path}: expected exactly one .npz file, found {len(files)}")
        path = files[0]
    with np.load(path) as z:
        missing = {"images", "labels"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing array(s) {sorted(missing)}; need images [N,H,W,3] uint8 and labels [N]")
        images = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float() / 255.0
        labels = torch.from_numpy(z["labels"]).long()
        classes = [str(c) for c in z["classes"]] if "classes" in z.files else [str(i) for i in range(int(labels.max()) + 1)]
    return ClassificationArrays(images, labels, classes)


def is_classification_npz(path: str | os.PathLike[str]) -> bool:
    """An .npz, or a folder holding one and no images/ folder (the CIFAR subset's layout)."""
    p = Path(path)
    return p.suffix == ".npz" or (p.is_dir() and any(p.glob("*.npz")) and not (p / "images").is_dir())


def open_dataset(path: str | os.PathLike[str], split: str | None = None) -> DetectionFolder | ClassificationArrays:
    """Detection folder or classification npz, decided by what is on disk."""
    p = Path(path)
    if is_classification_npz(p):
        if split:
            raise ValueError(f"split '{split}': {p} is a classification .npz without split folders; use subset "
                             "FILE.json:PART (--subset) for a part of it")
        return load_cifar_npz(p)
    return DetectionFolder(p, split=split)


def restrict_to_subset(dataset: DetectionFolder | ClassificationArrays, spec: str) -> DetectionFolder | ClassificationArrays:
    """Keep only the images listed under PART of a split JSON (`FILE.json:PART`).

    Detection folders match by file name; classification arrays by index (the pool files written
    by the engine). A name that is not in the data is an error, so a stale split cannot shrink a
    test set silently.
    """
    from taskbridge.data.splits import load_split

    file, _, part = str(spec).rpartition(":")
    if not file or not part:
        raise ValueError(f"subset: expected FILE.json:PART, got '{spec}'")
    parts = load_split(file)
    if part not in parts:
        raise ValueError(f"subset: {file} has no part '{part}' (parts: {', '.join(parts)})")
    if isinstance(dataset, ClassificationArrays):
        idx = [int(n) for n in parts[part]]
        if max(idx, default=-1) >= len(dataset):
            raise ValueError(f"subset: {file}:{part} indexes past the {len(dataset)} images of the data")
        return ClassificationArrays(dataset.images[idx], dataset.labels[idx], dataset.class_names)
    keep = {Path(n).name for n in parts[part]}
    dataset.items = [it for it in dataset.items if Path(it[0]).name in keep]
    if len(dataset.items) != len(keep):
        raise ValueError(f"subset: {len(keep)} names in {file}:{part}, {len(dataset.items)} found in {dataset.root}")
    return dataset


BadInput = Callable[[str, str], None]


@dataclass
class BadItem:
    """An image or label file that could not be read: `error` goes to `on_bad` (or is raised) where the
    photo's turn comes, so a reader in a worker process reports it instead of stopping the evaluation."""

    path: str
    error: Exception


def read_item(dataset: Sequence[DetectionSample], i: int) -> DetectionSample | BadItem:
    """`dataset[i]`, or a `BadItem` for an unreadable image or label file (any other error propagates)."""
    from taskbridge.data.io import ImageReadError
    from taskbridge.data.labels import LabelFormatError

    try:
        return dataset[i]
    except (ImageReadError, LabelFormatError) as err:
        items = getattr(dataset, "items", None)
        return BadItem(str(items[i][0]) if items is not None else f"item {i}", err)


def report_bad(item: BadItem, on_bad: BadInput | None) -> None:
    """Hand a bad file to the command's skip policy, or raise its error when there is none."""
    if on_bad is None:
        raise item.error
    on_bad(item.path, str(item.error))


def iter_samples(dataset: Sequence[DetectionSample] | Iterable[DetectionSample], limit: int | None = None,
                 on_bad: BadInput | None = None) -> Iterator[tuple[int, DetectionSample]]:
    """(index, sample) over a detection set; an unreadable image or label file goes to `on_bad(path, reason)`
    (the command's skip policy) and the rest go on, or raises when `on_bad` is None. Indices are the data
    set's own, so per-image seeds do not shift when a file is skipped."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        for i, s in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            yield i, s
        return
    n = len(dataset) if limit is None else min(len(dataset), limit)  # type: ignore[arg-type]
    for i in range(n):
        sample = read_item(dataset, i)  # type: ignore[arg-type]
        if isinstance(sample, BadItem):
            report_bad(sample, on_bad)
            continue
        yield i, sample
