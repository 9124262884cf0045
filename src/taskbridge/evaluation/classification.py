"""`evaluate_classification`: (degrade) -> pipeline -> frozen classifier -> top-1 and macro ROC-AUC."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from taskbridge.degrade.base import run_degradation
from taskbridge.evaluation.datasets import ClassificationArrays
from taskbridge.metrics.bootstrap import DEFAULT_SEED, bootstrap_top1, images_key, summary
from taskbridge.metrics.classification import macro_roc_auc, per_class_accuracy, top1_accuracy
from taskbridge.tasks.base import ClassificationTask


def label_lookup(dataset_names: list[str], model_names: list[str], class_map: Mapping[str, str] | None) -> Tensor:
    """Dataset label index -> model class index, by name (through `class_map` dataset->model names)."""
    cmap = dict(class_map or {})
    lut = []
    for n in dataset_names:
        m = cmap.get(n, n)
        if m not in model_names:
            raise ValueError(
                f"dataset class '{n}' has no model class (model classes: {model_names[:10]}...). "
                f"Give a class map entry '{n}=<model class name>'."
            )
        lut.append(model_names.index(m))
    return torch.tensor(lut)


def degraded_batch(dataset: ClassificationArrays, start: int, batch_size: int,
                   degrade: Callable[[Tensor], object] | None, seed: int) -> Tensor:
    """The batch of `dataset` from `start` as `evaluate_classification` scores it: degraded under seed + batch index."""
    x = dataset.images[start: start + batch_size]
    return x if degrade is None else run_degradation(degrade, x, seed + start // batch_size)


def degraded_arrays(
    dataset: ClassificationArrays, degrade: Callable[[Tensor], object], seed: int = 0, batch_size: int = 256
) -> ClassificationArrays:
    """The degraded images `evaluate_classification` scores, all at once: so that a diagnosis
    (scripts/vat_gate_stats.py, vat_label_audit.py) looks at the very instances an accuracy was measured on."""
    images = [degraded_batch(dataset, s, batch_size, degrade, seed) for s in range(0, len(dataset), batch_size)]
    return ClassificationArrays(torch.cat(images) if images else dataset.images, dataset.labels, dataset.class_names)


def evaluate_classification(
    task: ClassificationTask,
    dataset: ClassificationArrays,
    pipeline: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
    *,
    degrade: Callable[[Tensor], object] | None = None,
    seed: int = 0,
    class_map: Mapping[str, str] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    bootstrap: int = 0,
) -> dict:
    """Top-1 accuracy and macro ROC-AUC of `task` on (optionally degraded, then piped) images.

    Scores are restricted to the model classes the dataset's classes map to (so a 1000-class model
    can be scored on a 10-class set); each batch is degraded under seed `seed + batch index`. `bootstrap` > 0
    adds top-1's standard error and 95 % interval over that many resamples of the images (`metrics.bootstrap`).
    """
    dev = torch.device(device) if device is not None else next((p.device for p in task.parameters()), torch.device("cpu"))
    lut = label_lookup(dataset.class_names, list(task.class_names), class_map)
    probs, labels = [], []
    starts = range(0, len(dataset), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch")
    t0 = time.perf_counter()
    for s in starts:
        x = degraded_batch(dataset, s, batch_size, degrade, seed).to(dev)
        with torch.no_grad():
            if pipeline is not None:
                x = pipeline(x)
            logits = task.raw(x)[:, lut.to(dev)]
        probs.append(logits.softmax(dim=1).float().cpu())
        labels.append(dataset.labels[s: s + batch_size])
    p, y = torch.cat(probs), torch.cat(labels)
    spread = {}
    if bootstrap > 0:
        correct = (p.argmax(dim=1) == y).numpy()
        key = images_key([hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in dataset.images[: len(y)]])
        spread = {"bootstrap": {"top1": summary(bootstrap_top1(correct, bootstrap), DEFAULT_SEED, key)}}
    return {
        "kind": "classification",
        "num_images": int(y.shape[0]),
        "top1": top1_accuracy(p, y),
        "roc_auc_macro": macro_roc_auc(p, y),
        "per_class_accuracy": dict(zip(dataset.class_names, per_class_accuracy(p, y, len(dataset.class_names)), strict=True)),
        "settings": {
            "task": getattr(task, "name", type(task).__name__),
            "pipeline": getattr(pipeline, "describe", lambda: repr(pipeline))() if pipeline is not None else None,
            "degradation": repr(degrade) if degrade is not None else None, "seed": seed,
            "batch_size": batch_size, "scores": "softmax over the model classes the dataset maps to",
        },
        "seconds": round(time.perf_counter() - t0, 2),
        **spread,
    }
