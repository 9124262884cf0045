"""What several methods share: networks from recipe sections, value ranges, unpaired batches, presets."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from taskbridge.config import ConfigError, build
from taskbridge.registry import Registry

#: Adam settings of the CycleGAN and CUT references, for generator and discriminator groups
ADAM_GAN = {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}


def network_section(section: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's section over the method's default one; another `type` drops the default's options."""
    over = dict(section or {})
    base = dict(default)
    if "type" in over and over["type"] != base.get("type"):
        base = {}
    base.update(over)
    return base


def build_network(registry: Registry, section: Mapping[str, Any] | None, default: Mapping[str, Any], where: str,
                  **fixed: Any) -> nn.Module:
    """Build a network from a recipe section (`{type: name, **options}`) merged over the method's default.

    `fixed` are options the method itself decides (e.g. VaT's 6-channel gated T_A); a recipe that sets
    one of them is an error naming it.
    """
    spec = network_section(section, default)
    clash = sorted(set(fixed) & set(dict(section or {})))
    if clash:
        raise ConfigError(f"{where}: {', '.join(clash)} is set by the method, not the recipe")
    return build(registry, {**spec, **fixed}, where)


def to_range(x: Tensor, rng: tuple[float, float]) -> Tensor:
    """[0, 1] images -> a network's value range."""
    lo, hi = rng
    return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo


def to_unit(x: Tensor, rng: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """A network's value range -> [0, 1] images (clamped)."""
    lo, hi = rng
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def unpaired_inputs(batch: dict[str, Any], who: str, rng: tuple[float, float] = (-1.0, 1.0)) -> tuple[Tensor, Tensor]:
    """Check the unpaired batch {'A': [B,3,H,W], 'B': [B,3,H,W]} in [0, 1] and map it to the networks' range."""
    out = []
    for key in ("A", "B"):
        if key not in batch:
            raise KeyError(f"{who}: batch has no '{key}' images (keys: {', '.join(map(str, batch))})")
        x = batch[key]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{who}: batch['{key}'] must be a [B, 3, H, W] tensor in [0, 1], got {shape}")
        out.append(to_range(x, rng))
    return out[0], out[1]


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into `module`'s parameters (the generator's pass through D), restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def with_defaults(cls: type, doc: str, **defaults: Any) -> type:
    """A preset subclass whose constructor signature shows the preset's defaults (so
    `METHODS.create` validates keywords and `taskbridge list` documents them)."""
    base_sig = inspect.signature(cls.__init__)
    bad = set(defaults) - set(base_sig.parameters)
    if bad:
        raise TypeError(f"unknown preset keys {bad}")

    def __init__(self: Any, **kwargs: Any) -> None:
        cls.__init__(self, **{**defaults, **kwargs})

    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in base_sig.parameters.values()]
    __init__.__signature__ = base_sig.replace(parameters=params)  # type: ignore[attr-defined]
    sub = type(cls.__name__ + "Preset", (cls,), {"__init__": __init__, "__doc__": doc})
    sub.__signature__ = base_sig.replace(parameters=params[1:])  # type: ignore[attr-defined]
    return sub
