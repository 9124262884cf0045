"""Where a run computes: the device a recipe names, its AMP dtype, and moving batches there."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from taskbridge.config import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """`auto` = CUDA when available, else CPU; a CUDA device on a machine without one is a clear error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use device=cpu")
    return dev


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` (None: full precision); AMP is a CUDA feature, ignored elsewhere."""
    if amp in (False, None):
        return None
    if device.type != "cuda":
        warnings.warn(f"train.amp={amp!r} ignored on {device.type}: AMP is used on CUDA only", stacklevel=2)
        return None
    if amp in (True, "auto"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[amp]


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts) to `device`; everything else as it is."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
