"""The before/after table printed at the end of `taskbridge fit`: same validation split, same settings,
for the plain degraded input, the frozen restorer alone and the trained translator (best checkpoint)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

HIDDEN = ("num_", "seconds")


def compare_on_validation(trainer: Any, prefer: str = "best") -> dict[str, dict[str, float]]:
    """{row name: validation metrics}; rows: input, restorer (if the method has a non-identity one), translator."""
    from taskbridge.engine import checkpoint as ckpt
    from taskbridge.restorers.identity import Identity

    validator: Callable[..., Mapping[str, float]] | None = trainer.validator
    if validator is None:
        return {}
    rows: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        rows["input"] = dict(validator(nn.Identity(), -1))
        restorer = getattr(trainer.method, "restorer", None)
        if isinstance(restorer, nn.Module) and not isinstance(restorer, (Identity, nn.Identity)):
            rows[f"restorer ({type(restorer).__name__})"] = dict(validator(restorer.eval(), -1, as_restorer=True))
        try:
            translator = ckpt.load_translator(trainer.output_dir, device=trainer.device, prefer=prefer)
            label = f"translator ({prefer}, step {translator.meta.get('step')})"
        except (FileNotFoundError, ckpt.CheckpointError):
            translator, label = ckpt.Translator(trainer.method).eval(), "translator (last)"
        rows[label] = dict(validator(translator, -1))
    return rows


def format_table(rows: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    if not rows:
        return ""
    keys = [k for k in next(iter(rows.values())) if not k.startswith(HIDDEN)]
    width = max(len(r) for r in rows) + 2
    lines = [title] if title else []
    lines.append("".ljust(width) + "".join(f"{k:>14}" for k in keys))
    for name, metrics in rows.items():
        lines.append(name.ljust(width) + "".join(f"{metrics.get(k, float('nan')):>14.4f}" for k in keys))
    return "\n".join(lines)
