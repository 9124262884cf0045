"""VaT's objective taken apart, for the scripts that measure it (scripts/vat_grad_stats.py,
scripts/vat_det_label_audit.py): one loss term at a time, on the batches `taskbridge fit` would train on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from taskbridge.engine.device import to_device
from taskbridge.engine.trainer import Trainer

TERMS = ("cycle", "fusion", "translation", "hq", "feature")
FLOWS = TERMS[1:4]


@contextmanager
def only_term(method: nn.Module, term: str) -> Iterator[None]:
    """VaT's objective reduced to one of its terms (the cycle loss, one MLE flow, the feature alignment)."""
    saved = (method.use_cycle, method.use_mle, dict(method.flows), method.feature_align)
    method.use_cycle = term == "cycle"
    method.use_mle = term in FLOWS
    method.flows = {f: f == term and saved[2][f] for f in saved[2]}
    method.feature_align = saved[3] if term == "feature" else 0.0
    try:
        yield
    finally:
        method.use_cycle, method.use_mle, method.flows, method.feature_align = saved


def active_terms(method: nn.Module) -> list[str]:
    terms = ["cycle"] if method.use_cycle else []
    terms += [f for f in FLOWS if method.flows.get(f)] if method.use_mle else []
    return terms + (["feature"] if method.feature_align > 0 else [])


def probe_trainer(recipe: str | Path, overrides: list[str], output_dir: str | Path,
                  checkpoint: str | Path | None = None) -> Trainer:
    """The recipe's method and data as `taskbridge fit` builds them (at a run's checkpoint if given), without
    validation, TensorBoard or progress bars: nothing is trained, only measured."""
    trainer = Trainer.from_recipe(recipe, [*overrides, "val.type=none", "train.tensorboard=false",
                                           "train.progress=false"], output_dir=output_dir)
    if checkpoint is not None:
        trainer.load(checkpoint, force=True)
    return trainer


def training_batches(trainer: Trainer, n: int) -> Iterator[dict[str, Any]]:
    """The first `n` training batches, in the order of the fit's epochs, on the trainer's device."""
    loader = iter(trainer._loader(0, 0))
    for k in range(n):
        try:
            batch = next(loader)
        except StopIteration:
            loader = iter(trainer._loader(k // max(trainer.steps_per_epoch, 1), 0))
            batch = next(loader)
        yield to_device(batch, trainer.device)
