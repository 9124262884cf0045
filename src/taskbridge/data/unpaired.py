"""Unpaired A/B sampling for translation training (A = degraded, B = clean).

Item ``i`` of epoch ``e`` pairs ``A[i mod |A|]`` with ``B[perm_e[i mod |B|]]``, where ``perm_e`` is a
permutation of B drawn from ``(seed, e)``: every epoch sees a new random pairing, and the same
seed always gives the same pairings (CycleGAN draws B at random per item, the VaT reference fixes
one shuffle for all epochs: ``repair_each_epoch=False`` reproduces the latter). Crops and flips are
drawn from a generator seeded by ``(seed, epoch, index, side)``, so results do not depend on the
number of DataLoader workers.

Call `set_epoch(e)` before iterating each epoch. With ``persistent_workers=True`` workers keep
their own copy of the dataset and would not see the new epoch: leave it off.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from taskbridge.data.folders import resolve_files
from taskbridge.data.io import ImageReadError, read_image
from taskbridge.data.transforms import as_hw, resize_image

PathLike = str | os.PathLike[str]
_MIX = 1_000_003


def _seed_of(*parts: int) -> int:
    s = 0
    for p in parts:
        s = (s * _MIX + int(p)) % (2**63 - 1)
    return s


SKIP_LOG = "skipped.jsonl"  # a run's unreadable training images (any loader worker), one JSON line each


def skipped_files(log: Path) -> list[dict[str, str]]:
    """The skips recorded in `log`, each file once, in the order first met."""
    if not log.is_file():
        return []
    seen: dict[str, dict[str, str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill -9
            continue
        seen.setdefault(entry.get("file", ""), entry)
    return list(seen.values())


class EpochDataset(Dataset):
    """A training set the trainer tells which epoch it is in (new pairings, crops); `set_epoch` may do nothing.

    `skip_log`: where a set that skips unreadable files records them (one JSON line each); the trainer
    points it into the run folder.
    """

    skip_log: Path | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch is iterated."""


class UnpairedDataset(EpochDataset):
    """{"A", "B", "A_path", "B_path"} with a seeded A<->B pairing that changes every epoch.

    Per image: optional resize to `resize` ((h, w) or an int for a square, aspect not kept, as
    CycleGAN's ``resize_and_crop`` and VaT; with ``keep_aspect=True`` the short side becomes
    `resize`), then a `crop` of `size` ("random", "center" or "none"); an image smaller than
    `size` is first upscaled (aspect kept) so the crop fits; optional random horizontal `flip`.
    ``crop="random_resized"`` takes a random window covering a share in `crop_scale` of the photo's
    area (aspect between 3/4 and 4/3 of the photo's, at most the whole photo) and resizes it to `size`:
    multi-scale views of full-resolution photos, so small objects appear at a size a detector sees.
    Unreadable files are skipped with a warning naming them (the next file of the same side
    takes their place) or raise (`on_error="raise"`). With `skip_log` set (the trainer sets it to
    `<run>/skipped.jsonl`), each skip is also appended there as one JSON line, from whichever loader
    worker met it, so the run's summary can list them.
    Each A item also says which part of its photo it shows: "A_window" (top, left, height, width as
    fractions of the photo) and "A_flip", so boxes labelled on the photo can follow it (`window_boxes`).
    """

    def __init__(
        self,
        a_files: PathLike | Sequence[PathLike],
        b_files: PathLike | Sequence[PathLike],
        size: int | Sequence[int] = 256,
        resize: int | Sequence[int] | None = None,
        crop: str = "random",
        flip: bool = False,
        seed: int = 0,
        on_error: str = "skip",
        keep_aspect: bool = False,
        repair_each_epoch: bool = True,
        crop_scale: tuple[float, float] = (0.25, 1.0),
    ) -> None:
        if crop not in ("random", "center", "none", "random_resized"):
            raise ValueError(f"crop must be 'random', 'center', 'none' or 'random_resized', got {crop!r}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be 0 < low <= high <= 1, got {tuple(crop_scale)}")
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.a_files = resolve_files(a_files)
        self.b_files = resolve_files(b_files)
        self.size = as_hw(size)
        self.resize = None if resize is None else (resize if keep_aspect else as_hw(resize))
        if keep_aspect and not isinstance(resize, int):
            raise ValueError("keep_aspect=True needs resize to be an int (the short side)")
        self.crop, self.flip, self.seed = crop, flip, int(seed)
        self.on_error = on_error
        self.keep_aspect = keep_aspect
        self.repair_each_epoch = repair_each_epoch
        self.epoch = 0
        self._perm: Tensor | None = None
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return max(len(self.a_files), len(self.b_files))

    def set_epoch(self, epoch: int) -> None:
        """Pick the pairing (and crops) of `epoch`."""
        self.epoch = int(epoch)
        self._perm = None

    def _b_perm(self) -> Tensor:
        if self._perm is None:
            e = self.epoch if self.repair_each_epoch else 0
            g = torch.Generator().manual_seed(_seed_of(self.seed, e, 7))
            self._perm = torch.randperm(len(self.b_files), generator=g)
        return self._perm

    def pair_indices(self, index: int) -> tuple[int, int]:
        """(A index, B index) of item `index` in the current epoch."""
        return index % len(self.a_files), int(self._b_perm()[index % len(self.b_files)])

    def _read(self, files: list[Path], j: int, side: str) -> tuple[Tensor, Path]:
        for k in range(len(files)):
            path = files[(j + k) % len(files)]
            if path in self._bad:
                continue
            try:
                return read_image(path), path
            except (ImageReadError, FileNotFoundError) as err:
                if self.on_error == "raise":
                    raise
                self._bad.add(path)
                warnings.warn(f"skipping unreadable {side} image: {err}", stacklevel=3)
                if self.skip_log is not None:
                    with open(self.skip_log, "a", encoding="utf-8") as log:
                        log.write(json.dumps({"file": str(path), "side": side, "reason": str(err)}) + "\n")
        raise ImageReadError(f"no readable image left on side {side} ({len(files)} files, all unreadable)")

    def _prepare(self, image: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, bool]:
        """The training view of one photo, the window of the photo it shows (top, left, height, width as
        fractions; resizing keeps fractions) and whether it was mirrored."""
        if self.resize is not None:
            if self.keep_aspect:
                h, w = image.shape[-2:]
                r = int(self.resize) / min(h, w)
                image = resize_image(image, (max(1, round(h * r)), max(1, round(w * r))))
            else:
                image = resize_image(image, self.resize)  # type: ignore[arg-type]
        window = (0.0, 0.0, 1.0, 1.0)
        if self.crop == "random_resized":
            image, window = self._random_resized(image, g)
        elif self.crop != "none":
            th, tw = self.size
            h, w = image.shape[-2:]
            if h < th or w < tw:  # too small to crop: upscale, aspect kept
                r = max(th / h, tw / w)
                image = resize_image(image, (max(th, round(h * r)), max(tw, round(w * r))))
                h, w = image.shape[-2:]
            if self.crop == "random":
                top = int(torch.randint(0, h - th + 1, (1,), generator=g))
                left = int(torch.randint(0, w - tw + 1, (1,), generator=g))
            else:
                top, left = (h - th) // 2, (w - tw) // 2
            image = image[:, top : top + th, left : left + tw]
            window = (top / h, left / w, th / h, tw / w)
        flipped = self.flip and bool(torch.rand(1, generator=g) < 0.5)
        if flipped:
            image = image.flip(-1)
        return image.contiguous(), torch.tensor(window, dtype=torch.float64), flipped

    def _random_resized(self, image: Tensor, g: torch.Generator) -> tuple[Tensor, tuple[float, float, float, float]]:
        h, w = image.shape[-2:]
        lo, hi = self.crop_scale
        area = (lo + (hi - lo) * float(torch.rand(1, generator=g))) * h * w
        aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand(1, generator=g)))  # w/h change
        ch = min(h, max(1, round(math.sqrt(area / aspect * h / w))))
        cw = min(w, max(1, round(math.sqrt(area * aspect * w / h))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        return resize_image(image[:, top : top + ch, left : left + cw], self.size), (top / h, left / w, ch / h, cw / w)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ia, ib = self.pair_indices(index)
        a, a_path = self._read(self.a_files, ia, "A")
        b, b_path = self._read(self.b_files, ib, "B")
        ga = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, index, 1))
        gb = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, index, 2))
        a, window, flipped = self._prepare(a, ga)
        return {"A": a, "B": self._prepare(b, gb)[0], "A_path": str(a_path), "B_path": str(b_path),
                "A_window": window, "A_flip": flipped}


def window_boxes(boxes: Tensor, window: Tensor, flipped: bool, size: tuple[int, int],
                 min_visible: float = 0.5) -> tuple[Tensor, Tensor]:
    """Boxes given as fractions of a photo (xyxy in [0, 1]) -> pixels of its training view of `size` (h, w)
    that shows `window` (top, left, height, width as fractions) of the photo, mirrored if `flipped`; and the
    mask of the boxes kept. Boxes are clipped to the view; one keeping less than `min_visible` of its
    area is dropped (a sliver at the edge is not an object a detector should be asked to find)."""
    top, left, wh, ww = (float(v) for v in window)
    h, w = size
    b = boxes.double().reshape(-1, 4)
    x = (b[:, [0, 2]] - left) / ww
    y = (b[:, [1, 3]] - top) / wh
    area = (x[:, 1] - x[:, 0]) * (y[:, 1] - y[:, 0])
    x, y = x.clamp(0, 1), y.clamp(0, 1)
    visible = (x[:, 1] - x[:, 0]) * (y[:, 1] - y[:, 0])
    keep = (area > 0) & (visible >= min_visible * area)
    if flipped:
        x = 1 - x.flip(-1)
    out = torch.stack([x[:, 0] * w, y[:, 0] * h, x[:, 1] * w, y[:, 1] * h], dim=1)
    return out[keep].float(), keep


def unpaired_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into the method batch {"A": [B,3,H,W], "B": ..., "A_paths": [...], "B_paths": [...]}."""
    for side in ("A", "B"):
        shapes = {tuple(item[side].shape) for item in batch}
        if len(shapes) > 1:
            raise ValueError(
                f"unpaired_collate: side {side} has images of different sizes {sorted(shapes)}; "
                "set crop='random'/'center' or a fixed resize=(h, w)"
            )
    out = {
        "A": torch.stack([item["A"] for item in batch]),
        "B": torch.stack([item["B"] for item in batch]),
        "A_paths": [item["A_path"] for item in batch],
        "B_paths": [item["B_path"] for item in batch],
    }
    if all("A_window" in item for item in batch):  # folder data: which part of each A photo is shown
        out["A_windows"] = torch.stack([item["A_window"] for item in batch])
        out["A_flips"] = [bool(item["A_flip"]) for item in batch]
    if all("A_label" in item for item in batch):  # cifar data with labels_A: an oracle ceiling's classes
        out["A_labels"] = torch.tensor([int(item["A_label"]) for item in batch], dtype=torch.long)
    return out
