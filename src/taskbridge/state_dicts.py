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


def load_prefixed(module: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """`load_state_dict(strict=True)` with an error that names the weights and the mismatching keys;
    subnormal weights are flushed to zero on the way (`flush_denormals`)."""
    state = flush_denormals(state)
    missing, unexpected = [], []
    try:
        result = module.load_state_dict(dict(state), strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:  # shape mismatch
        raise RuntimeError(f"{where}: weights do not fit the architecture ({err})") from err
    if missing or unexpected:
        raise RuntimeError(
            f"{where}: weights do not fit the architecture; missing keys {missing[:8]}, unexpected keys "
            f"{unexpected[:8]}. Is this the right checkpoint?"
        )


def unwrap_state(state: object, where: str) -> dict[str, Tensor]:
    """Accept a plain state dict or the common `{'state_dict': ...}` / `{'model': ...}` wrappers."""
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "params"):
            inner = state.get(key)
            if isinstance(inner, Mapping):
                state = inner
                break
        if all(isinstance(v, Tensor) for v in state.values()):
            return {str(k).removeprefix("module."): v for k, v in state.items()}
    raise RuntimeError(f"{where}: expected a state dict of tensors, got {type(state).__name__}")
