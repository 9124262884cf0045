"""The recipe's `val:` section -> a validator `(pipeline, step) -> {metric: value}`.

Validation runs only on the held-out split the data section defines (never the test split):

* `type: detection`: `task: {type: ..., ...}` (frozen detector), `data:` the labelled folder
  (relative to data.root) holding the held-out images; when `data.split` carved a val part out of
  train_A only those files are scored. `split` picks the Ultralytics-layout split folder (e.g.
  val2017) and `subset: FILE.json:PART` the held-out part of it; `degrade: {type: ...}` with its own
  `seed` (default 0, fixed across runs so every run is selected on the same images) synthesises the
  degraded validation images from clean labelled ones. Options passed to `evaluate_detection`:
  img_size, conf_thres, iou_thres, class_map, max_det, multi_label, letterbox_mode, limit.
* `type: classification` (with `data.source: cifar_npz`): scores the val pool, degraded by the
  data section's degradation under `seed`; options: task, batch_size, class_map, seed.

`pipeline` holds the image stages to score (None = the degraded input itself): the trainer passes
the method being trained as an `InferenceModel` (at the recipe's `inference.working_size`), the fit
report also a restorer alone. `metric`/`mode`/`split_name` are read by the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskbridge.config import ConfigError, build
from taskbridge.engine.data import DataPlan, data_root, file_names

DETECTION_KEYS = {"type", "task", "data", "img_size", "conf_thres", "iou_thres", "class_map", "max_det",
                  "multi_label", "letterbox_mode", "resize", "limit", "label_format", "split", "subset", "degrade",
                  "seed"}
CLASSIFICATION_KEYS = {"type", "task", "batch_size", "class_map", "seed"}


def _scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """Top-level numbers of an evaluation result, plus `coco_*` numbers of its COCO cross-check."""
    out = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    coco = result.get("coco")
    if isinstance(coco, Mapping):
        out.update({f"coco_{k}": float(v) for k, v in coco.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out.pop("seconds", None)
    return out


def build_validator(val_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], plan: DataPlan, seed: int,
                    device: torch.device) -> Callable[[nn.Module, int], dict[str, float]] | None:
    cfg = {k: v for k, v in dict(val_cfg).items() if k not in ("metric", "mode", "split_name")}
    kind = cfg.get("type", "none")
    if kind in (None, "none"):
        return None
    from taskbridge import evaluation
    from taskbridge.registry import TASKS

    if kind == "detection":
        unknown = sorted(set(cfg) - DETECTION_KEYS)
        if unknown:
            raise ConfigError(f"val: unknown key(s) {', '.join(unknown)} for detection; accepted: {', '.join(sorted(DETECTION_KEYS))}")
        if not cfg.get("task") or not cfg.get("data"):
            raise ConfigError("val (detection): needs 'task' ({type: ...}) and 'data' (labelled folder relative to data.root)")
        folder = Path(str(cfg["data"]))
        folder = folder if folder.is_absolute() else data_root(dict(data_cfg)) / folder
        dataset = evaluation.DetectionFolder(folder, split=cfg.get("split"), label_format=str(cfg.get("label_format", "auto")))
        if cfg.get("subset"):
            from taskbridge.evaluation.datasets import restrict_to_subset

            try:
                restrict_to_subset(dataset, str(cfg["subset"]))
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError(f"val.subset: {err}") from err
        if plan.val_files is not None:
            keep = file_names(plan.val_files)
            dataset.items = [it for it in dataset.items if str(Path(it[0]).resolve()) in keep]
            if not dataset.items:
                raise ConfigError(f"val.data={folder} holds none of the {len(keep)} held-out images of data.split/val_A")
        task = build(TASKS, cfg["task"], "val.task").to(device).eval()
        opts = {k: cfg[k] for k in ("img_size", "conf_thres", "iou_thres", "class_map", "max_det", "multi_label",
                                     "letterbox_mode", "resize", "limit") if k in cfg}
        if cfg.get("degrade") is not None:
            from taskbridge.registry import DEGRADATIONS

            opts["degrade"] = build(DEGRADATIONS, cfg["degrade"], "val.degrade")
            opts["seed"] = int(cfg.get("seed", 0))

        def validate_detection(pipeline: nn.Module | None, step: int) -> dict[str, float]:
            res = evaluation.evaluate_detection(task, dataset, pipeline, progress=False, device=device, **opts)
            return _scalars(res)

        return validate_detection

    if kind == "classification":
        unknown = sorted(set(cfg) - CLASSIFICATION_KEYS)
        if unknown:
            raise ConfigError(f"val: unknown key(s) {', '.join(unknown)} for classification; accepted: {', '.join(sorted(CLASSIFICATION_KEYS))}")
        if plan.val_arrays is None:
            raise ConfigError("val (classification): the data section has no 'val' pool (data.source: cifar_npz with split.fractions.val)")
        if not cfg.get("task"):
            raise ConfigError("val (classification): needs 'task' ({type: ...})")
        task = build(TASKS, cfg["task"], "val.task").to(device).eval()
        v_seed = int(cfg.get("seed", seed))

        def validate_classification(pipeline: nn.Module | None, step: int) -> dict[str, float]:
            res = evaluation.evaluate_classification(
                task, plan.val_arrays, pipeline, batch_size=int(cfg.get("batch_size", 256)), degrade=plan.degradation,
                seed=v_seed, class_map=cfg.get("class_map"), progress=False, device=device)
            return _scalars(res)

        return validate_classification

    raise ConfigError(f"val.type: unknown '{kind}'; one of none, detection, classification")
