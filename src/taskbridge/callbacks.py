"""Training callbacks: hooks into the training loop that methods and the engine declare.

A method lists the callbacks it needs in `Method.callbacks()` (an EMA copy of its generator, gate
statistics, ...); the engine adds its own (image grids, validation). The trainer calls them in that
order after every optimisation step, so an EMA copy is up to date before validation reads it.
Callbacks depend on the small `TrainingRun` protocol below, not on the engine, so the methods that
declare them never import the engine.

A callback with state beyond the method's state dict returns it from `state_dict()` (nested
dicts/lists of tensors and plain values); the trainer stores it in checkpoints and hands it back
through `load_state_dict()` on resume, so resumed runs stay exact.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class TrainingRun(Protocol):
    """What a callback may read or ask of the running trainer."""

    step: int
    total_steps: int
    method: nn.Module
    output_dir: Path
    log_due: bool  # this step's scalars are written (log_every, the first and the last step)

    def log_scalars(self, values: Mapping[str, Any], kind: str = "train") -> dict[str, float]: ...

    def log_images(self, visuals: Mapping[str, Any]) -> None: ...

    def save(self, name: str | None = None, **extra: Any) -> Path: ...


class Callback:
    """Every hook is optional; `name` keys the callback's state in checkpoints (unique per run)."""

    name: str = "callback"

    def on_fit_start(self, run: TrainingRun) -> None:
        """Once before the first step of this process (a resumed run calls it again after loading)."""

    def on_step_end(self, run: TrainingRun, batch: Any, outputs: Mapping[str, Any]) -> None:
        """After the optimizers stepped; `run.step` is the number of steps done."""

    def on_fit_end(self, run: TrainingRun) -> None:
        """After the last step of this process (also on an interrupt)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class EMA(Callback):
    """Exponential moving average of a module's parameters and buffers into a copy of it.

    target <- decay * target + (1 - decay) * source after every step (buffers are copied). The copy
    lives in the method (e.g. GFP-GAN's `G_ema`, built with `EMA.copy_of`) so it is saved with the
    method's weights and can be what inference uses; it never requires grad.
    """

    def __init__(self, source: nn.Module, target: nn.Module, decay: float = 0.999, name: str = "ema") -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        src, tgt = dict(source.named_parameters()), dict(target.named_parameters())
        if src.keys() != tgt.keys():
            raise ValueError("EMA: source and target have different parameters")
        self.source, self.target, self.decay, self.name = source, target, float(decay), name

    @staticmethod
    def copy_of(module: nn.Module) -> nn.Module:
        """A frozen deep copy to average into."""
        ema = copy.deepcopy(module)
        for p in ema.parameters():
            p.requires_grad_(False)
        return ema

    @torch.no_grad()
    def on_step_end(self, run: TrainingRun, batch: Any, outputs: Mapping[str, Any]) -> None:
        for (_, s), (_, t) in zip(self.source.named_parameters(), self.target.named_parameters(), strict=True):
            t.lerp_(s.detach().to(t.dtype), 1.0 - self.decay)
        for (_, s), (_, t) in zip(self.source.named_buffers(), self.target.named_buffers(), strict=True):
            t.copy_(s)


def flat_parameters(module: nn.Module) -> Tensor:
    """All of a module's parameters as one float vector on the CPU (empty for none)."""
    params = [p.detach().float().reshape(-1) for p in module.parameters()]
    return torch.cat(params).cpu() if params else torch.zeros(0)


def relative_drift(now: Tensor, start: Tensor) -> float:
    """||w - w0|| / ||w0||: how far a flattened network moved from where it started."""
    return float((now - start).norm() / start.norm().clamp_min(1e-12))


class ParameterDrift(Callback):
    """Logs how far named parts of the method moved from where this run started: ||w - w0|| / ||w0||.

    Answers "did training move this network at all?" (VaT's gate and transformation module), with the
    start weights kept in the callback's state so a resumed run reports the same numbers.
    """

    def __init__(self, parts: Mapping[str, nn.Module], name: str = "drift") -> None:
        self.parts, self.name = dict(parts), name
        self.start: dict[str, Tensor] = {}

    def on_fit_start(self, run: TrainingRun) -> None:
        for key, module in self.parts.items():
            self.start.setdefault(key, flat_parameters(module).clone())

    def on_step_end(self, run: TrainingRun, batch: Any, outputs: Mapping[str, Any]) -> None:
        if not run.log_due:
            return
        run.log_scalars({f"drift/{key}": relative_drift(flat_parameters(module), self.start[key])
                         for key, module in self.parts.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"start": dict(self.start)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.start = {k: v.clone() for k, v in dict(state.get("start", {})).items()}
