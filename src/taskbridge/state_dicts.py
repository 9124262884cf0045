"""Plain state dicts of released checkpoints: unwrapping, strict loading with a clear error, denormal flushing.

Shared by every family that loads public weights (restorers, face detectors, translators), so none of
them imports another family for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def flush_denormals(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Float tensors with subnormal values (|x| < 1.2e-38) set to zero.

    AOD-Net's released weights hold 801 subnormal values (decayed dead weights, e.g. 2e-42); x86 CPUs
    run arithmetic on subnormals up to 100x slower, which made one 1280 px DAWN photo take 10 s
    instead of 0.25 s. Zeroing them cannot change an image: each term they contribute is below
    1e-40, far under float32 resolution of any pixel value (tests compare the 8-bit outputs).
    """
    tiny = torch.finfo(torch.float32).tiny
    out = {}
    for k, v in state.items():
        if isinstance(v, Tensor) and v.is_floating_point():
            v = torch.where(v.abs() < tiny, torch.zeros_like(v), v)
        out[k] = v
    return out


def load_prefixed(module: nn.Module, state: Mapping[str, Tensor], where: str, flush: bool = True) -> None:
    """`load_state_dict(strict=True)`, refused first (nothing loaded) in one line naming `where` and every
    misfit key: missing, unexpected, wrong shape. With `flush`, subnormal weights are set to zero on the
    way (`flush_denormals`)."""
    if flush:
        state = flush_denormals(state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
                 for name, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches (file vs model)", shapes)) if keys]
        raise RuntimeError(f"{where}: weights do not fit {type(module).__name__}; " + "; ".join(parts)
                           + ". Is this the right checkpoint?")
    module.load_state_dict(dict(state), strict=True)


def unwrap_state(state: object, where: str, keys: tuple[str, ...] = ("state_dict", "model", "params")) -> dict[str, Tensor]:
    """A plain state dict, or the first of the wrapper `keys` that holds one; a DDP `module.` prefix is dropped."""
    if isinstance(state, Mapping):
        for key in keys:
            inner = state.get(key)
            if isinstance(inner, Mapping):
                state = inner
                break
        if all(isinstance(v, Tensor) for v in state.values()):
            return {str(k).removeprefix("module."): v for k, v in state.items()}
    raise RuntimeError(f"{where}: expected a state dict of tensors (or one under {'/'.join(repr(k) for k in keys)}), "
                       f"got {type(state).__name__}")
