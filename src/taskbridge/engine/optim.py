"""Optimizer and learning-rate schedule builders, from recipe sections.

`optim.<group>: {type: adamw, lr: 1e-4, weight_decay: 1e-4, betas: [0.9, 0.999]}` builds one
optimizer per method group; `schedule: {type: cosine_warm_restarts, T_0: 2000, T_mult: 2,
eta_min: 1e-6, interval: step}` builds its scheduler (VaT, REFERENCE 1.8: stepped per iteration).
A group may override the run-wide schedule with its own `optim.<group>.schedule` section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
)

from taskbridge.config import ConfigError
from taskbridge.run_config import ScheduleConfig, describe_errors

_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

OPTIMIZER_TYPES = tuple(_OPTIMIZERS)


def _param_groups(params: list[nn.Parameter], overrides: Mapping[str, Any], subsets: Mapping[str, Iterable[nn.Parameter]],
                  where: str) -> list[dict[str, Any]]:
    """torch parameter groups: each named subset with its own options, the rest with the group's."""
    unknown = sorted(set(overrides) - set(subsets))
    if unknown:
        have = ", ".join(subsets) or "none"
        raise ConfigError(f"{where}.param_groups: no parameter subset {', '.join(unknown)}; the method has {have}")
    ids = {id(p) for p in params}
    taken: set[int] = set()
    groups = []
    for name, options in overrides.items():
        members = [p for p in subsets[name] if id(p) in ids and id(p) not in taken]
        taken.update(id(p) for p in members)
        if members:
            groups.append({"params": members, **dict(options or {})})
    rest = [p for p in params if id(p) not in taken]
    return _freeze_zero_lr(([{"params": rest}] if rest else []) + groups)


def _freeze_zero_lr(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A named subset at lr 0 is held exactly where it is: out of the optimizer and without gradients.

    In the optimizer it would still move (a schedule's eta_min applies to every group, and AdamW's weight decay
    with it), and its weight gradients would cost a backward for nothing (about 40 % of a VaT gate-only step).
    When nothing else would train (an untrained control, every group at lr 0), the groups stay as given."""
    held = [g for g in groups if "lr" in g and float(g["lr"]) == 0.0]
    if len(held) == len(groups):
        return groups
    for g in held:
        for p in g["params"]:
            p.requires_grad_(False)
    return [g for g in groups if not any(g is h for h in held)]


def build_optimizer(params: Iterable[nn.Parameter], spec: dict[str, Any], where: str = "optim",
                    subsets: Mapping[str, Iterable[nn.Parameter]] | None = None) -> Optimizer:
    """`spec` = {type, lr, ...torch keyword arguments}; unknown keywords fail naming the key.

    `spec["param_groups"]` = {subset: {lr: ..., ...}} gives named parameter subsets of the group
    (`subsets`, from the method's `param_subsets()`) their own options in the same optimizer, e.g.
    VaT's gate at a higher learning rate than its transformation module (one backward, one step)."""
    opts = dict(spec)
    overrides = dict(opts.pop("param_groups", None) or {})
    name = str(opts.pop("type", "adam")).lower()
    if name not in _OPTIMIZERS:
        raise ConfigError(f"{where}.type: unknown optimizer '{name}'; one of {', '.join(OPTIMIZER_TYPES)}")
    if "lr" not in opts:
        raise ConfigError(f"{where}: missing 'lr'")
    if "betas" in opts:
        opts["betas"] = tuple(float(b) for b in opts["betas"])
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError(f"{where}: the group has no trainable parameters")
    groups: list[Any] = _param_groups(params, overrides, subsets or {}, where) if overrides else params
    try:
        return _OPTIMIZERS[name](groups, **opts)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def _linear_decay_factor(n_constant: int, n_decay: int, final: float):
    def factor(t: int) -> float:
        if t < n_constant:
            return 1.0
        frac = min(1.0, (t - n_constant + 1) / max(1, n_decay + 1))
        return 1.0 - (1.0 - final) * frac

    return factor


class _Constant(LambdaLR):
    """LambdaLR with factor 1 whose state round-trips (no lambda to pickle)."""

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(optimizer, lambda _t: 1.0)


def build_scheduler(
    optimizer: Optimizer, spec: ScheduleConfig | Mapping[str, Any] | None, total: int, where: str = "schedule"
) -> tuple[LRScheduler, str]:
    """Return (scheduler, interval). `total` = number of scheduler steps in the run (steps or epochs).

    * `constant`: fixed lr.
    * `cosine`: from lr to eta_min (default 0) over the whole run (torch `CosineAnnealingLR`; Hierarchy Flow).
    * `cosine_warm_restarts`: T_0, T_mult, eta_min (torch `CosineAnnealingWarmRestarts`).
    * `multistep`: lr x `gamma` (default 0.5) at each of `milestones` (torch `MultiStepLR`; GFP-GAN).
    * `linear_decay`: lr constant for `n_constant` intervals then linearly to `final` x lr over
      `n_decay` (CycleGAN's 100 + 100 epochs); defaults split `total` in half.
    """
    if not isinstance(spec, ScheduleConfig):
        try:
            spec = ScheduleConfig.model_validate(dict(spec or {}))
        except ValidationError as err:
            raise ConfigError(f"{where}: {describe_errors(err)}") from None
    opts = spec.options()
    if spec.type == "constant":
        sched: LRScheduler = _Constant(optimizer)
    elif spec.type == "cosine":
        sched = CosineAnnealingLR(optimizer, T_max=max(1, int(total)), eta_min=float(opts.get("eta_min", 0.0)))
    elif spec.type == "cosine_warm_restarts":
        sched = CosineAnnealingWarmRestarts(optimizer, T_0=int(opts.get("T_0", 2000)), T_mult=int(opts.get("T_mult", 1)),
                                            eta_min=float(opts.get("eta_min", 0.0)))
    elif spec.type == "multistep":
        if not opts.get("milestones"):
            raise ConfigError(f"{where}: schedule multistep needs milestones, e.g. [600000, 700000]")
        sched = MultiStepLR(optimizer, milestones=[int(m) for m in opts["milestones"]],
                            gamma=float(opts.get("gamma", 0.5)))
    else:  # linear_decay
        n_constant = int(opts.get("n_constant", total // 2))
        n_decay = int(opts.get("n_decay", max(0, total - n_constant)))
        sched = LambdaLR(optimizer, _linear_decay_factor(n_constant, n_decay, float(opts.get("final", 0.0))))
    return sched, spec.interval


def merge_group_spec(defaults: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """Recipe `optim.<group>` over `method.default_optim()[group]`; changing `type` drops foreign defaults."""
    base = dict(defaults or {})
    over = dict(override or {})
    if "type" in over and "type" in base and str(over["type"]).lower() != str(base["type"]).lower():
        base = {k: base[k] for k in ("lr",) if k in base}
    base.update(over)
    return base


def step_groups(
    groups: Mapping[str, list[nn.Parameter]],
    optimizers: Mapping[str, Optimizer],
    out: dict[str, Any],
    scaler: torch.amp.GradScaler,
    grad_clip: float | None = None,
    after_backward: Callable[[list[nn.Parameter]], None] | None = None,
) -> None:
    """One training step's updates: per group in order, zero every group's gradients, back-propagate
    `out["loss/<group>"]` (keeping the graph for the groups after it), `after_backward(params)` (the
    ranks' gradient average), clip (norm logged as `out["grad_norm/<group>"]`) and step that group.

    GAN generator and discriminator updates alternate like the references'; the trainer and
    `taskbridge bench` both step through here.
    """
    n = len(groups)
    for i, (g, params) in enumerate(groups.items()):
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)
        loss = out[f"loss/{g}"]
        if not loss.requires_grad:
            continue
        opt = optimizers[g]
        scaler.scale(loss.float()).backward(retain_graph=i < n - 1)
        if after_backward is not None:
            after_backward(params)
        if grad_clip:
            scaler.unscale_(opt)
            out[f"grad_norm/{g}"] = torch.nn.utils.clip_grad_norm_(params, float(grad_clip))
        scaler.step(opt)
    for o in optimizers.values():
        o.zero_grad(set_to_none=True)
    scaler.update()
