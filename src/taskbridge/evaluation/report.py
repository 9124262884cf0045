"""Evaluation outputs: a plain-text table, a JSON file, and a before/after picture grid of detections."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor


def _fmt(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def detection_table(results: dict[str, dict]) -> str:
    """One row per run (e.g. 'degraded', '+aodnet'), one column per class, then mAP50 (VOC) and COCO numbers."""
    first = next(iter(results.values()))
    classes = list(first["voc"]["per_class"])
    head = f"{'run':<24}" + "".join(f"{c[:10]:>11}" for c in classes) + f"{'mAP50':>9}{'COCO50':>9}{'COCO50:95':>11}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        pc = r["voc"]["per_class"]
        coco = r.get("coco") or {}
        lines.append(
            f"{name:<24}" + "".join(f"{_fmt(pc[c]['ap']):>11}" for c in classes)
            + f"{_fmt(r['map50']):>9}{_fmt(coco.get('map50')):>9}{_fmt(coco.get('map50_95')):>11}"
        )
    return "\n".join(lines)


def classification_table(results: dict[str, dict]) -> str:
    head = f"{'run':<32}{'top-1':>9}{'ROC-AUC':>9}{'images':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(f"{name:<32}{100 * r['top1']:>8.2f}%{_fmt(r['roc_auc_macro']):>9}{r['num_images']:>8}")
    return "\n".join(lines)


def bootstrap_table(results: dict[str, dict]) -> str:
    """Each row's score with its bootstrap spread over the images, and its paired difference from the first row.

    The rows share their resamples (same images, same seed), so "vs first" is a paired bootstrap: it is how
    sure a difference between two rows is on this many images, which a single score cannot say.
    """
    from taskbridge.metrics.bootstrap import paired_difference

    rows = {name: r for name, r in results.items() if r.get("bootstrap")}
    if not rows:
        return ""
    first_name, first = next(iter(rows.items()))
    metric = next(iter(first["bootstrap"]))
    scale, unit = (100.0, "%") if metric == "top1" else (1.0, "")

    def num(v: float | None, sign: bool = False) -> str:
        if v is None or math.isnan(v):
            return "n/a"
        return f"{scale * v:+.3f}{unit}" if sign else f"{scale * v:.3f}{unit}"

    head = (f"{'run':<32}{metric:>10}{'SE':>9}{'95% interval':>22}{'vs ' + first_name[:18]:>24}"
            f"{'95% interval':>22}{'better in':>11}")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        b = r["bootstrap"][metric]
        d = paired_difference(first["bootstrap"][metric], b) if name != first_name else None
        diff = (f"{num(r[metric] - first[metric], True):>24}{num(d['ci95'][0], True) + ' .. ' + num(d['ci95'][1], True):>22}"
                f"{100 * d['p_better']:>10.1f}%") if d else f"{'-':>24}{'':>22}{'':>11}"
        lines.append(f"{name:<32}{num(r[metric]):>10}{num(b['se']):>9}"
                     f"{num(b['ci95'][0]) + ' .. ' + num(b['ci95'][1]):>22}" + diff)
    n = first["bootstrap"][metric]["resamples"]
    return "\n".join(lines + [f"({n} resamples of the {first['num_images']} images, with replacement; intervals: "
                               "2.5-97.5 percentiles; 'better in': share of resamples where the row scores above "
                               "the first)"])


def quality_table(results: dict[str, dict]) -> str:
    """One row per run: mean PSNR / SSIM (vs the clean image, n/a without --degrade), NIQE of the task input,
    and SSIM to the degraded image it was made from (content preservation)."""
    head = f"{'run':<32}{'PSNR':>9}{'SSIM':>9}{'NIQE':>9}{'SSIM-in':>9}{'images':>8}"
    lines, notes = [head, "-" * len(head)], []
    for name, r in results.items():
        q = r.get("quality") or r  # a whole run (with its "quality" entry) or the quality dict itself
        lines.append(f"{name:<32}{_fmt(q['psnr']):>9}{_fmt(q['ssim']):>9}{_fmt(q['niqe']):>9}"
                     f"{_fmt(q.get('ssim_input')):>9}{q['num_images']:>8}")
        if q.get("niqe_skipped"):
            notes.append(f"{name}: NIQE skipped for {q['niqe_skipped']}")
    return "\n".join(lines + notes)


def write_json(path: str | os.PathLike[str], payload: dict) -> Path:
    """Atomic JSON write (NaN written as null so any JSON reader accepts the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(o: object) -> object:
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, Tensor):
            return clean(o.tolist())
        return o

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(payload), indent=2))
    os.replace(tmp, path)
    return path


def draw_detections(image: Tensor, boxes: Tensor, labels: Sequence[str], color: str = "red",
                    gt: Tensor | None = None, width: int = 2) -> Tensor:
    """uint8 CHW picture with predicted boxes (coloured, labelled) and ground truth (green, thin)."""
    from torchvision.utils import draw_bounding_boxes

    from taskbridge.data.transforms import to_uint8

    img = to_uint8(image)
    if gt is not None and len(gt):
        img = draw_bounding_boxes(img, gt.float(), colors="lime", width=1)
    if len(boxes):
        img = draw_bounding_boxes(img, boxes.float(), labels=list(labels), colors=color, width=width)
    return img


def detection_grid(task, samples: Sequence, pipeline: Callable[[Tensor], Tensor] | None, class_map,
                   indices: Sequence[int], protocol=None, conf: float = 0.25, tile: int = 320,
                   degrade: Callable | None = None, seed: int = 0, on_bad: Callable | None = None) -> Tensor | None:
    """Rows = images; columns = degraded input with its detections, then the pipeline's output with its detections.

    Each column is what the detector saw under `protocol` (the evaluation's `DetectionProtocol`):
    boxes above `conf` are drawn on the letterboxed input, then the picture is resized to `tile`;
    ground-truth boxes of the evaluated classes are drawn thin in green.
    """
    import dataclasses

    import torch.nn.functional as F

    from taskbridge.data.transforms import letterbox_boxes
    from taskbridge.evaluation.class_map import ClassMap
    from taskbridge.evaluation.detection import (
        DetectionProtocol,
        degrade_photo,
        detect_letterboxed,
        run_stages,
    )

    protocol = dataclasses.replace(protocol or DetectionProtocol(), conf_thres=conf, iou_thres=0.45, max_det=100)
    cmap = ClassMap.from_any(class_map, default=task.class_names)
    lut = cmap.model_lookup(task.class_names)
    tiles = []
    dev = next((p.device for p in task.parameters()), torch.device("cpu"))
    from taskbridge.evaluation.datasets import iter_samples

    wanted = set(indices)
    for i, s in iter_samples(samples, max(indices, default=-1) + 1, on_bad):
        if i not in wanted:
            continue
        image = degrade_photo(degrade, s.image, seed + i)
        columns = [image] + ([run_stages(pipeline, image, dev)] if pipeline is not None else [])
        gidx = [k for k, n in enumerate(s.names) if cmap.index(n, "dataset") >= 0]
        for col, x in enumerate(columns):
            det, lb, meta = detect_letterboxed(task, x, protocol, dev)
            gt = letterbox_boxes(s.boxes[gidx].float(), meta) if gidx else torch.zeros(0, 4)
            ev = [lut[j] for j in det.labels.tolist()]
            keep = [k for k, e in enumerate(ev) if e >= 0]
            names = [f"{cmap.classes[ev[k]]} {float(det.scores[k]):.2f}" for k in keep]
            pic = draw_detections(lb.cpu(), det.boxes[keep].cpu(), names, "red" if col == 0 else "orange", gt)
            scale = tile / max(pic.shape[-2:])
            size = (max(1, round(pic.shape[-2] * scale)), max(1, round(pic.shape[-1] * scale)))
            pic = F.interpolate(pic[None].float(), size=size, mode="bilinear", antialias=True)[0]
            canvas = torch.zeros(3, tile, tile)
            canvas[:, : size[0], : size[1]] = pic
            tiles.append(canvas.round().to(torch.uint8))
    if not tiles:  # every photo asked for was skipped
        return None
    from torchvision.utils import make_grid

    return make_grid(torch.stack(tiles).float(), nrow=1 if pipeline is None else 2, padding=4).to(torch.uint8)


def save_png(image: Tensor, path: str | os.PathLike[str]) -> Path:
    """uint8 CHW -> PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)
    return path
