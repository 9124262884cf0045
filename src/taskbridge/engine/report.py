"""The before/after table printed at the end of `taskbridge fit`: same validation split, same settings,
for the plain degraded input, the frozen restorer alone and the trained translator (best checkpoint)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

HIDDEN = ("num_", "seconds")


def compare_on_validation(trainer: Any, prefer: str = "best") -> dict[str, dict[str, float]]:
    """{row name: validation metrics}; rows: input, the restorer the method owns (alone), the trained translator."""
    from taskbridge import checkpoint as ckpt
    from taskbridge.inference import InferenceModel, Pipeline, RestorerStage, load_inference_model

    if trainer.validation is None:
        return {}
    validator: Callable[..., Mapping[str, float]] = trainer.validation.validator
    rows: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        rows["input"] = dict(validator(None, -1))
        restorer = trainer.method.owned_restorer()
        if restorer is not None:
            stage = RestorerStage(restorer)
            rows[f"restorer ({stage.name})"] = dict(validator(Pipeline([stage]).eval(), -1))
        try:
            model = load_inference_model(trainer.output_dir, device=trainer.device, prefer=prefer)
            label = f"translator ({prefer}, step {model.meta.get('step')})"
        except (FileNotFoundError, ckpt.CheckpointError):
            model = InferenceModel(trainer.method, trainer.cfg.inference.working_size, trainer.cfg.inference.residual).eval()
            label = "translator (last)"
        rows[label] = dict(validator(Pipeline([model]).eval(), -1))
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
