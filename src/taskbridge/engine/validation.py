"""The recipe's `val:` section -> a validator `(pipeline, step) -> {metric: value}`.

Validation runs only on the held-out split the data section defines (never the test split):

* `type: detection`: `task: {type: ..., ...}` (frozen detector), `data:` the labelled folder
  (relative to data.root) holding the held-out images; when `data.split` carved a val part out of
  train_A only those files are scored. `split` picks the Ultralytics-layout split folder (e.g.
  val2017) and `subset: FILE.json:PART` the held-out part of it; `degrade: {type: ...}` with its own
  `seed` (default 0, fixed across runs so every run is selected on the same images) synthesises the
  degraded validation images from clean labelled ones. Options passed to `evaluate_detection`:
  img_size, conf_thres, iou_thres, class_map, max_det, multi_label, letterbox_mode, limit. Every class's
  AP is returned (`ap_<class>`), and with `min_boxes: N` also `map50_common`, the mean AP over the classes
  with at least N ground-truth boxes on these photos (a selection metric a 4-box class cannot swing).
* `type: classification` (with `data.source: cifar_npz`): scores the val pool, degraded by the
  data section's degradation under `seed`; options: task, batch_size, class_map, seed.

`pipeline` holds the image stages to score (None = the degraded input itself): the trainer passes
the method being trained as an `InferenceModel` (at the recipe's `inference.working_size`), the fit
report also a restorer alone. `metric`/`mode`/`split_name` are read by the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskbridge.config import ConfigError, build
from taskbridge.engine.data import DataPlan, file_names
from taskbridge.metrics.detection import common_class_map
from taskbridge.run_config import ClassificationValidation, DetectionValidation


def _scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """Top-level numbers of an evaluation result, plus `coco_*` numbers of its COCO cross-check."""
    out = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    coco = result.get("coco")
    if isinstance(coco, Mapping):
        out.update({f"coco_{k}": float(v) for k, v in coco.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out.pop("seconds", None)
    return out


def build_validator(val: DetectionValidation | ClassificationValidation, plan: DataPlan, seed: int,
                    device: torch.device) -> Callable[[nn.Module | None, int], dict[str, float]]:
    from taskbridge import evaluation
    from taskbridge.registry import TASKS

    if isinstance(val, DetectionValidation):
        folder = Path(val.data)
        folder = folder if folder.is_absolute() else plan.root / folder
        try:
            dataset = evaluation.DetectionFolder(folder, split=val.split, label_format=val.label_format)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"val.data: {err}") from err
        if val.subset:
            from taskbridge.evaluation.datasets import restrict_to_subset

            try:
                restrict_to_subset(dataset, val.subset)
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError(f"val.subset: {err}") from err
        if plan.val_files is not None:
            keep = file_names(plan.val_files)
            dataset.items = [it for it in dataset.items if str(Path(it[0]).resolve()) in keep]
            if not dataset.items:
                raise ConfigError(f"val.data={folder} holds none of the {len(keep)} held-out images of data.split/val_A")
        task = build(TASKS, val.task, "val.task").to(device).eval()
        opts = val.protocol_options()
        if val.degrade is not None:
            from taskbridge.registry import DEGRADATIONS

            opts["degrade"] = build(DEGRADATIONS, val.degrade, "val.degrade")
            opts["seed"] = val.seed

        def validate_detection(pipeline: nn.Module | None, step: int) -> dict[str, float]:
            # in-process reading: no forked readers (nor changed thread counts) inside a training run
            res = evaluation.evaluate_detection(task, dataset, pipeline, progress=False, device=device,
                                                **{"num_workers": 0, **opts})
            # every class's AP is logged (val/ap_<class>), so any selection rule can be recomputed from the log
            per_class = {f"ap_{c}": float(v["ap"]) for c, v in res["voc"]["per_class"].items() if not math.isnan(v["ap"])}
            common = {"map50_common": common_class_map(res["voc"], val.min_boxes)[0]} if val.min_boxes else {}
            return {**_scalars(res), **per_class, **common}

        return validate_detection

    if plan.val_arrays is None:
        raise ConfigError("val (classification): the data section has no 'val' pool (data.source: cifar_npz with split.fractions.val)")
    task = build(TASKS, val.task, "val.task").to(device).eval()
    v_seed = val.seed if val.seed is not None else seed

    def validate_classification(pipeline: nn.Module | None, step: int) -> dict[str, float]:
        res = evaluation.evaluate_classification(
            task, plan.val_arrays, pipeline, batch_size=val.batch_size, degrade=plan.degradation,
            seed=v_seed, class_map=val.class_map, progress=False, device=device)
        return _scalars(res)

    return validate_classification
