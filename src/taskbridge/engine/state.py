"""The training state a checkpoint needs beyond the weights, so a resumed run continues exactly.

Optimizers, schedulers, the AMP scaler, every RNG, the method's own state outside its state dict
(`Method.training_state`, e.g. CycleGAN's image pools) and the callbacks' states, as nested plain
data and tensors (the checkpoint writer splits them into safetensors + JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from taskbridge.callbacks import Callback
from taskbridge.checkpoint import CheckpointError
from taskbridge.engine.seed import capture_rng, restore_rng


def capture(optimizers: Mapping[str, Optimizer], schedulers: Mapping[str, Any], scaler: torch.amp.GradScaler,
            method: Any, callbacks: Sequence[Callback], rng: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything but the weights; `rng` replaces the current RNG snapshot (a NaN step saves the one before it)."""
    out: dict[str, Any] = {
        "optim": {g: o.state_dict() for g, o in optimizers.items()},
        "sched": {g: s.state_dict() for g, s in schedulers.items()},
        "scaler": scaler.state_dict(),
        "rng": rng if rng is not None else capture_rng(),
    }
    method_state = method.training_state()
    if method_state:
        out["method"] = method_state
    cb_states = {cb.name: st for cb in callbacks if (st := cb.state_dict())}
    if cb_states:
        out["callbacks"] = cb_states
    return out


def restore(state: Mapping[str, Any], optimizers: Mapping[str, Optimizer], schedulers: Mapping[str, Any],
            scaler: torch.amp.GradScaler, method: Any, callbacks: Sequence[Callback], where: str) -> None:
    """Put `capture`'s output back (RNG last, so nothing restored here draws from it)."""
    if set(state["optim"]) != set(optimizers):
        raise CheckpointError(f"{where}: optimizer groups {sorted(state['optim'])} != method groups {sorted(optimizers)}")
    for g, o in optimizers.items():
        try:
            o.load_state_dict(state["optim"][g])
        except ValueError as err:  # e.g. parameter groups changed: a subset at lr 0 is frozen since the run began
            raise CheckpointError(f"{where}: optimizer '{g}' does not match this recipe ({err}); resume with the "
                                  "code and recipe that started the run, or start it afresh") from None
        schedulers[g].load_state_dict(state["sched"][g])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if "method" in state:
        method.load_training_state(state["method"])
    saved = dict(state.get("callbacks") or {})
    for cb in callbacks:
        if cb.name in saved:
            cb.load_state_dict(saved[cb.name])
    restore_rng(state["rng"])
