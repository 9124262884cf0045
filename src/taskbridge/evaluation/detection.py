"""`evaluate_detection`: letterbox -> pipeline -> frozen detector -> boxes back to the original image -> AP.

AP is computed in the pixels of the *original* image against the original labels, so the number
does not depend on the letterbox geometry except through what the detector sees.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from taskbridge.evaluation.class_map import ClassMap
from taskbridge.evaluation.datasets import DetectionSample
from taskbridge.evaluation.letterbox import letterbox
from taskbridge.evaluation.pipeline import run_degradation
from taskbridge.metrics.detection import ImageBoxes, coco_backend, coco_detection_ap, voc_detection_ap
from taskbridge.tasks.base import DetectionTask


def apply_degradation(degrade: Callable[[Tensor], object] | None, image: Tensor, seed: int | None) -> Tensor:
    """Degrade one CHW image under its own seed (see `run_degradation`)."""
    return image if degrade is None else run_degradation(degrade, image[None], seed)[0]


def predict_original(task: DetectionTask, image: Tensor, pipeline: Callable[[Tensor], Tensor] | None,
                     img_size: int, letterbox_mode: str, conf_thres: float, iou_thres: float,
                     max_det: int, multi_label: bool, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detections of one image in its original pixels; also returns the task input (letterboxed)."""
    stride = int(getattr(task, "stride", 32))
    lb, info = letterbox(image, img_size, stride, letterbox_mode)
    x = lb[None].to(device)
    with torch.no_grad():
        if pipeline is not None:
            x = pipeline(x)
        det = task.predict(x, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, multi_label=multi_label)[0]
    boxes = info.boxes_to_original(det.boxes.float().cpu())
    return boxes, det.scores.float().cpu(), det.labels.cpu(), x[0].cpu()


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
    degrade: Callable[[Tensor], object] | None = None,
    seed: int = 0,
    voc_11_point: bool = False,
    ap_iou: float = 0.5,
    coco: bool = True,
    device: str | torch.device | None = None,
    limit: int | None = None,
) -> dict:
    """VOC AP@0.5 per class + mAP (and COCO mAP50 / mAP50:95 cross-check) of `task` on a labelled set.

    `pipeline` maps the letterboxed degraded batch [B, 3, H, W] to the task input (restorer and/or
    translator; None = the degraded image itself). `degrade` (optional) synthesises the degraded
    image from a clean one first, seeded per image with `seed + index`. Every setting is returned
    under `settings` so a number can be traced to how it was measured.
    """
    cmap = ClassMap.from_any(class_map, default=getattr(task, "class_names", None))
    lut = torch.tensor(cmap.model_lookup(task.class_names) + [-1])  # last entry: guard
    dev = torch.device(device) if device is not None else next((p.device for p in task.parameters()), torch.device("cpu"))
    preds: list[ImageBoxes] = []
    gts: list[ImageBoxes] = []
    paths: list[str] = []
    n_total = len(samples_or_dataset) if hasattr(samples_or_dataset, "__len__") else None  # type: ignore[arg-type]
    if limit is not None and n_total is not None:
        n_total = min(n_total, limit)
    it: Iterable = (samples_or_dataset[i] for i in range(n_total)) if n_total is not None and hasattr(
        samples_or_dataset, "__getitem__") else samples_or_dataset
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=n_total, desc="evaluate", unit="img")
    t0 = time.perf_counter()
    for idx, s in enumerate(it):
        if limit is not None and idx >= limit:
            break
        image = apply_degradation(degrade, s.image, seed + idx if degrade is not None else None)
        boxes, scores, labels, _ = predict_original(task, image, pipeline, img_size, letterbox_mode,
                                                    conf_thres, iou_thres, max_det, multi_label, dev)
        ev = lut[labels] if len(labels) else labels
        keep = ev >= 0
        preds.append(ImageBoxes(boxes[keep], ev[keep], scores[keep]))
        glab = torch.tensor([cmap.index(n, "dataset") for n in s.names], dtype=torch.long)
        gk = glab >= 0
        gts.append(ImageBoxes(s.boxes.float()[gk], glab[gk], difficult=s.difficult[gk]))
        paths.append(s.path)
    seconds = time.perf_counter() - t0
    voc = voc_detection_ap(preds, gts, cmap.classes, iou_thres=ap_iou, use_11_point=voc_11_point)
    if coco and coco_backend() is None:  # an extra column: its optional dependency must not stop a run
        warnings.warn("COCO-style AP skipped: pycocotools is not installed (pip install 'taskbridge[coco]'); "
                      "VOC mAP50 is unaffected", stacklevel=2)
        coco = False
    result = {
        "kind": "detection",
        "num_images": len(preds),
        "map50": voc["map"],
        "voc": voc,
        "coco": coco_detection_ap(preds, gts, cmap.classes, max_det) if coco and preds else None,
        "settings": {
            "task": getattr(task, "name", type(task).__name__),
            "img_size": img_size, "letterbox": letterbox_mode, "letterbox_pad": "114/255",
            "stride": int(getattr(task, "stride", 32)),
            "conf_thres": conf_thres, "nms_iou": iou_thres, "max_det": max_det, "multi_label": multi_label,
            "ap_iou": ap_iou, "ap_definition": voc["ap_definition"], "difficult": "ignored (neither TP nor FP)",
            "class_map": cmap.to_dict(), "pipeline": getattr(pipeline, "describe", lambda: repr(pipeline))()
            if pipeline is not None else None,
            "degradation": repr(degrade) if degrade is not None else None, "seed": seed,
        },
        "seconds": round(seconds, 2),
    }
    return result
