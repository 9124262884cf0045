"""Human labels of the degraded training photos, in place of VaT's pseudo-labels: an oracle ceiling.

VaT is unsupervised. `method.oracle_labels` swaps its pseudo-labels of the degraded side (the fusion and
translation flows) for the photos' ground-truth boxes, carried onto each training view (crop, resize,
flip), certain and at full weight; for a classifier (`oracle_labels: data`) for the classes the data set
keeps for pool A (`data.labels_A: true`). It answers "how much could this translator learn at this budget from a
perfect signal?": if even that does not lift the detector, better pseudo-labels cannot either. It reads
the labels VaT never reads, so it is a diagnostic, never a result to compare with the unsupervised rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.data.labels import COCO80_NAMES, DAWN_YOLO_IDS, LabelFormatError, read_yolo_txt
from taskbridge.data.unpaired import window_boxes
from taskbridge.tasks.base import Detections

ID_MAPS = {"coco1": DAWN_YOLO_IDS, "coco0": dict(enumerate(COCO80_NAMES))}  # what the files' class ids mean


class OracleLabels:
    """YOLO txt labels (`<stem>.txt`, normalised `cls cx cy w h`) of the A photos -> `Detections` per view."""

    def __init__(self, folder: str | Path, ids: str = "coco1", min_size: float = 0.0) -> None:
        if ids not in ID_MAPS:
            raise ValueError(f"method.oracle_ids: '{ids}' is not one of {', '.join(ID_MAPS)}")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"method.oracle_labels: {self.folder} is not a folder of YOLO label files")
        self.ids = ID_MAPS[ids]
        self.min_size = float(min_size)  # shorter side in the view's pixels: smaller boxes are left out
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}

    def of_photo(self, photo: str) -> tuple[Tensor, Tensor]:
        """(xyxy as fractions of the photo [N, 4], COCO class index [N]) of one A photo, read once."""
        if photo not in self._cache:
            path = self.folder / f"{Path(photo).stem}.txt"
            if not path.is_file():
                raise LabelFormatError(f"method.oracle_labels: no label file {path} for the training photo {photo}")
            ann = read_yolo_txt(path, (1, 1), self.ids, COCO80_NAMES, on_unknown="error")
            self._cache[photo] = (ann.boxes, ann.labels)
        return self._cache[photo]

    def detections(self, batch: dict, size: tuple[int, int], device: torch.device | str) -> list[Detections]:
        """The labels of every A view of an unpaired batch, in its pixels, as certain detections (score 1)."""
        if "A_windows" not in batch:
            raise ValueError("method.oracle_labels needs folder data (data.train_A): the batch does not say which "
                             "part of each photo its views show")
        out = []
        for photo, window, flipped in zip(batch["A_paths"], batch["A_windows"], batch["A_flips"], strict=True):
            boxes, labels = self.of_photo(photo)
            view, keep = window_boxes(boxes, window, flipped, size)
            labels = labels[keep]
            if self.min_size > 0:
                big = torch.minimum(view[:, 2] - view[:, 0], view[:, 3] - view[:, 1]) >= self.min_size
                view, labels = view[big], labels[big]
            out.append(Detections(view.to(device), torch.ones(len(view), device=device), labels.to(device)))
        return out


def certain(dets: Sequence[Detections]) -> tuple[list[Tensor], list[Tensor]]:
    """Uncertainty score 0 and label weight 1 for every box: what VaT's certainty test keeps in full."""
    return ([torch.zeros(len(d), device=d.boxes.device) for d in dets],
            [torch.ones(len(d), device=d.boxes.device) for d in dets])


def class_rows(labels: Tensor, n_classes: int, share: float) -> tuple[Tensor, int]:
    """Soft target rows share * one-hot of the human classes, every one certain at weight 1 (as `certain`)."""
    if share <= 0:
        return torch.zeros(len(labels), n_classes, device=labels.device), 0
    return F.one_hot(labels, n_classes).float() * share, len(labels)


def classes_of(batch: dict) -> Tensor:
    """The human classes of an unpaired batch's A images (the cifar data with `data.labels_A: true`)."""
    if "A_labels" not in batch:
        raise ValueError("method.oracle_labels: data reads the classes of pool A, which the batch does not carry: "
                         "set data.labels_A: true (cifar_npz data)")
    return batch["A_labels"]
