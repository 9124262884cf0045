"""Classification metrics: top-1 accuracy and macro one-vs-rest ROC-AUC (torchmetrics).

ROC-AUC is threshold-free, so it shows whether a degraded input still *ranks* the right class
high even when the arg-max flips; that is why it is reported next to top-1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from taskbridge.registry import METRICS


def top1_accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} predictions but {labels.shape[0]} labels")
    if probs.shape[0] == 0:
        return float("nan")
    return float((probs.argmax(dim=1) == labels).float().mean())


def macro_roc_auc(probs: Tensor, labels: Tensor) -> float:
    """Macro-averaged one-vs-rest ROC-AUC over the classes (torchmetrics' `auroc`)."""
    from torchmetrics.functional.classification import multiclass_auroc

    if probs.shape[0] == 0:
        return float("nan")
    return float(multiclass_auroc(probs.float(), labels.long(), num_classes=probs.shape[1], average="macro"))


def per_class_accuracy(probs: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Recall of each class (NaN where a class has no sample)."""
    pred = probs.argmax(dim=1)
    out = []
    for c in range(num_classes):
        m = labels == c
        out.append(float((pred[m] == c).float().mean()) if m.any() else float("nan"))
    return out


@METRICS.register("top1")
class Top1Accuracy:
    """Top-1 accuracy, accumulated with update(probs, labels) / compute()."""

    lower_better = False

    def __init__(self) -> None:
        self.probs: list[Tensor] = []
        self.labels: list[Tensor] = []

    def update(self, probs: Tensor, labels: Tensor) -> None:
        self.probs.append(probs.detach().cpu())
        self.labels.append(labels.detach().cpu())

    def _cat(self) -> tuple[Tensor, Tensor]:
        if not self.probs:
            return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
        return torch.cat(self.probs), torch.cat(self.labels)

    def compute(self) -> float:
        return top1_accuracy(*self._cat())


@METRICS.register("roc-auc")
class MacroROCAUC(Top1Accuracy):
    """Macro one-vs-rest ROC-AUC, accumulated with update(probs, labels) / compute()."""

    def compute(self) -> float:
        return macro_roc_auc(*self._cat())
