"""`evaluate_detection`: the reference protocol of a YOLOv5 user, for any frozen detector.

Per photo (`../shared/tools/reference_dawn_eval.py` is the reference): (degrade a clean photo, if
asked) -> the image stages (restorer, trained translator) at the photo's native resolution -> the
result quantised to 8 bits, as a saved image would be -> letterbox (OpenCV INTER_LINEAR by default,
grey 114 padding) -> detector -> NMS -> boxes back to the photo's pixels with YOLOv5's
`scale_boxes` and rounded to whole pixels (as detect.py writes them) -> VOC AP against the labels.
A user who restores a folder with `taskbridge restore` and evaluates the restored folder therefore
gets the same number as `evaluate --restorer`.

Photos are read ahead of the model by worker processes (`evaluation.loader`); a row without image
stages or degradation also letterboxes there, since nothing before the detector depends on the model.
The same functions run in either place, so every detector input is the same pixel for pixel. While
readers run, the main process gives their cores up (fewer torch threads, `loader.main_threads`), and
the detector's float output can depend on the thread count in its last bits: on the 200 DAWN photos
(2 cores: 2 threads -> 1) every VOC AP and COCO mAP50 is identical, COCO mAP50:95 moved in the 8th
digit. `num_workers=0` keeps the thread count and reproduces the serial loop bit for bit.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from taskbridge.data.transforms import (
    RESIZE_METHODS,
    LetterboxMeta,
    letterbox,
    quantize8,
    scale_boxes,
    yolov5_rect_shape,
)
from taskbridge.degrade.base import run_degradation
from taskbridge.evaluation.class_map import ClassMap
from taskbridge.evaluation.datasets import BadInput, BadItem, DetectionSample, report_bad
from taskbridge.evaluation.loader import default_workers, iter_photos
from taskbridge.metrics.bootstrap import DEFAULT_SEED, bootstrap_voc_map, images_key, summary
from taskbridge.metrics.detection import ImageBoxes, coco_backend, coco_detection_ap, voc_detection_ap
from taskbridge.tasks.base import Detections, DetectionTask

LETTERBOX_MODES = ("min", "square", "rect")


@dataclass(frozen=True)
class DetectionProtocol:
    """How a photo becomes detections; the defaults are the reference's (YOLOv5 val/detect)."""

    img_size: int = 640
    letterbox_mode: str = "min"  # min: pad to a stride multiple (auto=True); square; rect (YOLOv5 val batches)
    resize: str = "cv2"  # cv2 (reference) | bilinear | antialias
    quantize: bool = True  # 8-bit image after the stages and after the letterbox, as saved files are
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    multi_label: bool = False
    round_boxes: bool = True  # detect.py writes whole pixels

    def __post_init__(self) -> None:
        if self.letterbox_mode not in LETTERBOX_MODES:
            raise ValueError(f"letterbox mode '{self.letterbox_mode}' unknown; one of {', '.join(LETTERBOX_MODES)}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize '{self.resize}' unknown; one of {', '.join(RESIZE_METHODS)}")
        if self.img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {self.img_size}")

    def letterbox(self, image: Tensor, stride: int) -> tuple[Tensor, LetterboxMeta]:
        """The detector input of one CHW photo and how it was letterboxed."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if self.letterbox_mode == "rect":
            lb, meta = letterbox(image, yolov5_rect_shape(h, w, self.img_size, stride), stride, auto=False,
                                 resize=self.resize)
        else:
            lb, meta = letterbox(image, self.img_size, stride, auto=self.letterbox_mode == "min", resize=self.resize)
        return (quantize8(lb) if self.quantize else lb), meta

    def settings(self) -> dict:
        return {**asdict(self), "letterbox_pad": "114/255", "box_mapping": "YOLOv5 scale_boxes"}


def degrade_photo(degrade: Callable[[Tensor], object] | None, image: Tensor, seed: int | None, quantize: bool = True) -> Tensor:
    """Degrade one clean CHW photo under its own seed; quantised like a saved degraded photo."""
    if degrade is None:
        return image
    out = run_degradation(degrade, image[None], seed)[0]
    return quantize8(out) if quantize else out


def run_stages(pipeline: Callable[[Tensor], Tensor] | None, image: Tensor, device: torch.device,
               quantize: bool = True) -> Tensor:
    """The image stages on one CHW photo at its native resolution, then (by default) 8-bit quantisation."""
    if pipeline is None:
        return image
    with torch.no_grad():
        out = pipeline(image[None].to(device))[0]
    return quantize8(out) if quantize else out


def _predict(task: DetectionTask, lb: Tensor, protocol: DetectionProtocol, device: torch.device) -> Detections:
    with torch.no_grad():
        return task.predict(lb[None].to(device), conf_thres=protocol.conf_thres, iou_thres=protocol.iou_thres,
                            max_det=protocol.max_det, multi_label=protocol.multi_label)[0]


def detect_letterboxed(task: DetectionTask, image: Tensor, protocol: DetectionProtocol,
                       device: torch.device) -> tuple[Detections, Tensor, LetterboxMeta]:
    """Detections in letterbox pixels, the letterboxed task input and its meta, for one CHW photo."""
    lb, meta = protocol.letterbox(image, int(getattr(task, "stride", 32)))
    return _predict(task, lb, protocol, device), lb, meta


def detect_photo(task: DetectionTask, image: Tensor, protocol: DetectionProtocol,
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes in the photo's pixels, scores, labels) for one CHW photo."""
    lb, meta = protocol.letterbox(image, int(getattr(task, "stride", 32)))
    return detect_input(task, lb, meta, protocol, device)


def detect_input(task: DetectionTask, lb: Tensor, meta: LetterboxMeta, protocol: DetectionProtocol,
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes in the photo's pixels, scores, labels) for a photo already letterboxed (`lb`, `meta`)."""
    det = _predict(task, lb, protocol, device)
    boxes = scale_boxes(det.boxes.float().cpu(), tuple(lb.shape[-2:]), meta.orig_size)
    if protocol.round_boxes:
        boxes = boxes.round()
    return boxes, det.scores.float().cpu(), det.labels.cpu()


def evaluate_detection(
    task: DetectionTask,
    samples_or_dataset: Sequence[DetectionSample] | Iterable[DetectionSample],
    pipeline: Callable[[Tensor], Tensor] | None = None,
    img_size: int = 640,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    class_map: ClassMap | dict | Sequence[str] | str | None = "rtts5",
    progress: bool = True,
    *,
    max_det: int = 300,
    multi_label: bool = False,
    letterbox_mode: str = "min",
    resize: str = "cv2",
    quantize: bool = True,
    round_boxes: bool = True,
    degrade: Callable[[Tensor], object] | None = None,
    seed: int = 0,
    voc_11_point: bool = False,
    ap_iou: float = 0.5,
    coco: bool = True,
    device: str | torch.device | None = None,
    limit: int | None = None,
    on_bad: BadInput | None = None,
    num_workers: int | None = None,
    timings: dict[str, float] | None = None,
    bootstrap: int = 0,
) -> dict:
    """VOC AP@0.5 per class + mAP (and COCO mAP50 / mAP50:95 cross-check) of `task` on a labelled set.

    `pipeline` holds the image stages applied to each photo at its native resolution (restorer
    and/or trained translator; None = the photo itself). `degrade` (optional) synthesises the
    degraded photo from a clean one first, seeded per image with `seed + index`. Every setting is
    returned under `settings` so a number can be traced to how it was measured. An unreadable image
    or label file goes to `on_bad(path, reason)` and is left out (raises without `on_bad`).

    `num_workers` processes read a `DetectionFolder` ahead of the model (None = `default_workers()`,
    0 = in this process; see the module docstring on threads). `timings`, when given, accumulates
    seconds of the loop (`loop`) and of waiting for the next photo (`data`), for profiling. `bootstrap` > 0
    adds mAP50's standard error and 95 % interval over that many resamples of the photos (`metrics.bootstrap`).
    """
    protocol = DetectionProtocol(img_size, letterbox_mode, resize, quantize, conf_thres, iou_thres, max_det,
                                 multi_label, round_boxes)
    cmap = ClassMap.from_any(class_map, default=getattr(task, "class_names", None))
    lut = torch.tensor(cmap.model_lookup(task.class_names) + [-1])  # last entry: guard
    dev = torch.device(device) if device is not None else next((p.device for p in task.parameters()), torch.device("cpu"))
    preds: list[ImageBoxes] = []
    gts: list[ImageBoxes] = []
    names: list[str] = []
    n_total = len(samples_or_dataset) if hasattr(samples_or_dataset, "__len__") else None  # type: ignore[arg-type]
    if limit is not None and n_total is not None:
        n_total = min(n_total, limit)
    stride = int(getattr(task, "stride", 32))
    # no stage and no degradation: the letterbox needs nothing from the main process, so the readers do it
    prepare = partial(protocol.letterbox, stride=stride) if pipeline is None and degrade is None else None
    workers = default_workers() if num_workers is None else num_workers
    t0 = t_wait = time.perf_counter()
    data_wait = 0.0
    # closed on the way out, so a skip policy that raises stops the readers now, not at a garbage collection
    with closing(iter_photos(samples_or_dataset, limit, workers, prepare)) as photos:
        it: Iterable = photos
        if progress:
            from tqdm import tqdm

            it = tqdm(photos, total=n_total, desc="evaluate", unit="img")
        for photo in it:
            data_wait += time.perf_counter() - t_wait
            s = photo.sample
            if isinstance(s, BadItem):
                report_bad(s, on_bad)
                t_wait = time.perf_counter()
                continue
            if photo.task_input is None:
                image = degrade_photo(degrade, s.image, seed + photo.index, quantize)
                image = run_stages(pipeline, image, dev, quantize)
                lb, meta = protocol.letterbox(image, stride)
            else:
                lb, meta = photo.task_input, photo.meta
            boxes, scores, labels = detect_input(task, lb, meta, protocol, dev)
            ev = lut[labels] if len(labels) else labels
            keep = ev >= 0
            preds.append(ImageBoxes(boxes[keep], ev[keep], scores[keep]))
            glab = torch.tensor([cmap.index(n, "dataset") for n in s.names], dtype=torch.long)
            gk = glab >= 0
            gts.append(ImageBoxes(s.boxes.float()[gk], glab[gk], difficult=s.difficult[gk]))
            names.append(Path(s.path).name)
            t_wait = time.perf_counter()
    seconds = time.perf_counter() - t0
    if timings is not None:
        timings["loop"] = timings.get("loop", 0.0) + seconds
        timings["data"] = timings.get("data", 0.0) + data_wait
    voc = voc_detection_ap(preds, gts, cmap.classes, iou_thres=ap_iou, use_11_point=voc_11_point)
    spread = {}
    if bootstrap > 0 and preds:
        samples = bootstrap_voc_map(preds, gts, len(cmap.classes), bootstrap, iou_thres=ap_iou, use_11_point=voc_11_point)
        spread = {"bootstrap": {"map50": summary(samples, DEFAULT_SEED, images_key(names))}}
    if coco and coco_backend() is None:  # an extra column: its optional dependency must not stop a run
        warnings.warn("COCO-style AP skipped: pycocotools is not installed (pip install 'taskbridge[coco]'); "
                      "VOC mAP50 is unaffected", stacklevel=2)
        coco = False
    return {
        "kind": "detection",
        "num_images": len(preds),
        "map50": voc["map"],
        "voc": voc,
        "coco": coco_detection_ap(preds, gts, cmap.classes, max_det) if coco and preds else None,
        "settings": {
            "task": getattr(task, "name", type(task).__name__),
            **protocol.settings(),
            "stride": int(getattr(task, "stride", 32)), "stages_at": "native resolution",
            "ap_iou": ap_iou, "ap_definition": voc["ap_definition"], "difficult": "ignored (neither TP nor FP)",
            "class_map": cmap.to_dict(), "pipeline": getattr(pipeline, "describe", lambda: repr(pipeline))()
            if pipeline is not None else None,
            "degradation": repr(degrade) if degrade is not None else None, "seed": seed,
        },
        "seconds": round(seconds, 2),
        **spread,
    }
