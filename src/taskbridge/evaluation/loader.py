"""The photos of a detection evaluation, read ahead of the model in DataLoader worker processes.

Decoding a photo and parsing its labels do not depend on the model, and neither does the letterbox of
a row without image stages or degradation; done serially they took ~40 % of `taskbridge evaluate`.
Workers now do them for the next photos while the main process runs the detector. The workers run the
very same code as the main process did (`DetectionFolder.__getitem__`, `DetectionProtocol.letterbox`),
so every pixel is unchanged; the photos arrive in the data set's order with their own indices (which
seed the degradations). While they run, the main process uses fewer torch threads (`main_threads`).

[decision] Photos are still read with `taskbridge.data.io.read_image` (PIL). `torchvision.io.decode_image`
gave the same pixels on all 200 DAWN photos and decodes ~2x faster, but it links another libjpeg-turbo
(3.1.3 vs Pillow's 3.2.0), handles CMYK / EXIF / truncated files its own way, and is deprecated since
torchvision 0.29; identical numbers on every photo matter more than a decode a worker hides anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from taskbridge.data.transforms import LetterboxMeta
from taskbridge.evaluation.datasets import BadItem, DetectionFolder, DetectionSample, read_item

Prepare = Callable[[Tensor], tuple[Tensor, LetterboxMeta]]


@dataclass
class LoadedPhoto:
    """One photo as read ahead: its data-set index and sample (or `BadItem`), and, when a `prepare` ran
    in the reader, the task input and its letterbox meta. The photo itself is then not shipped back
    (`sample.image` is empty): only the task input is needed."""

    index: int
    sample: DetectionSample | BadItem
    task_input: Tensor | None = None
    meta: LetterboxMeta | None = None


def default_workers() -> int:
    """Reader processes next to the model's: one core is left to the main process; 0 on a single core."""
    return max(0, min(2, _cores() - 1))


def load_photo(dataset: Sequence[DetectionSample], i: int, prepare: Prepare | None = None) -> LoadedPhoto:
    """Read photo `i` (a bad file becomes a `BadItem`) and, with `prepare`, turn it into the task input."""
    sample = read_item(dataset, i)
    if prepare is None or isinstance(sample, BadItem):
        return LoadedPhoto(i, sample)
    x, meta = prepare(sample.image)
    return LoadedPhoto(i, replace(sample, image=torch.empty(0)), x, meta)


class _Photos(torch.utils.data.Dataset):
    """`load_photo` as a map-style data set, for the DataLoader's workers."""

    def __init__(self, dataset: Sequence[DetectionSample], prepare: Prepare | None) -> None:
        self.dataset = dataset
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> LoadedPhoto:
        return _small_as(load_photo(self.dataset, i, self.prepare), torch.Tensor.numpy)


def _small_as(photo: LoadedPhoto, convert: Callable) -> LoadedPhoto:
    """`photo` with its labels (and an empty image placeholder) converted: a tensor crosses processes
    through a shared-memory segment of its own (~0.5 ms each, measured), a small array is pickled inline."""
    s = photo.sample
    if isinstance(s, BadItem):
        return photo
    image = convert(s.image) if photo.task_input is not None else s.image
    return replace(photo, sample=replace(s, image=image, boxes=convert(s.boxes), difficult=convert(s.difficult)))


def _keep(photo: LoadedPhoto) -> LoadedPhoto:
    """No collation: photos differ in size and travel one by one."""
    return photo


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main_threads(workers: int) -> int:
    """Torch threads of the main process while `workers` readers run: the cores they need are given up,
    since OpenMP threads spin-wait when a core is taken (2 cores, 200 DAWN photos: 2 threads + 1 reader
    ran no faster than the serial loop, 1 thread + 1 reader 1.3-1.45x faster). Never raised above the
    current setting. The cost: a detector's float output can depend on the thread count in its last bits
    (`evaluation.detection`)."""
    now = torch.get_num_threads()
    return max(1, min(now, _cores() - workers)) if workers > 0 else now


def iter_photos(dataset: Sequence[DetectionSample] | Iterable[DetectionSample], limit: int | None = None,
                num_workers: int = 0, prepare: Prepare | None = None) -> Iterator[LoadedPhoto]:
    """The first `limit` photos of `dataset` in order, read by `num_workers` processes (0 = here).

    Workers are used for a `DetectionFolder` (photos read from disk); samples already in memory are
    taken as they are. Unreadable files come as `BadItem`s in their place, for the caller's skip policy.
    """
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        for i, s in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            yield LoadedPhoto(i, s) if prepare is None else LoadedPhoto(i, replace(s, image=torch.empty(0)),
                                                                         *prepare(s.image))
        return
    n = len(dataset) if limit is None else min(len(dataset), limit)  # type: ignore[arg-type]
    if num_workers <= 0 or n <= 1 or not isinstance(dataset, DetectionFolder):
        for i in range(n):
            yield load_photo(dataset, i, prepare)  # type: ignore[arg-type]
        return
    workers = min(num_workers, n)
    loader = torch.utils.data.DataLoader(
        _Photos(dataset, prepare), batch_size=None, sampler=range(n), num_workers=workers, collate_fn=_keep,
        in_order=True,
    )  # DataLoader workers run torch on one thread. OpenCV's thread count must not be set in them: after a
    # fork from a process that used OpenCV's pool, cv2.setNumThreads() waits forever (measured)
    before = torch.get_num_threads()
    torch.set_num_threads(main_threads(workers))
    try:
        for photo in loader:
            yield _small_as(photo, torch.from_numpy)
    finally:  # the caller closes this generator when it stops early
        torch.set_num_threads(before)
