"""degraded -> (restorer) -> (translator) -> task input, as one callable on [B, 3, H, W] batches.

Translator application follows the VaT evaluation (REFERENCE 1.9): the restorer and translator run
at a working size (`translate_size`, default the letterboxed size itself); in residual mode the
change they make, r = T(R(x_s)) - x_s, is upsampled bilinearly to the full letterboxed size and
added to the full-resolution degraded image x, then clamped to [0, 1], so full-resolution detail
survives a small working size. Without residual mode the working-size output is upsampled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _call_translator(translator: nn.Module | Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    fn = getattr(translator, "translate", None)
    return fn(x) if callable(fn) else translator(x)


class ImagePipeline(nn.Module):
    """Restorer and/or translator in front of a task; identity when both are None."""

    def __init__(self, restorer: nn.Module | None = None, translator: nn.Module | None = None,
                 translate_size: int | tuple[int, int] | None = None, residual: bool = True) -> None:
        super().__init__()
        self.restorer, self.translator = restorer, translator
        self.translate_size = (translate_size, translate_size) if isinstance(translate_size, int) else translate_size
        self.residual = residual

    def describe(self) -> dict:
        return {
            "restorer": getattr(self.restorer, "name", type(self.restorer).__name__) if self.restorer is not None else None,
            "translator": None if self.translator is None else type(self.translator).__name__,
            "translate_size": list(self.translate_size) if self.translate_size else "letterboxed size",
            "residual": self.residual if self.translator is not None else None,
        }

    def _inner(self, x: Tensor) -> Tensor:
        if self.restorer is not None:
            x = self.restorer(x).clamp(0, 1)
        if self.translator is not None:
            x = _call_translator(self.translator, x).clamp(0, 1)
        return x

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.translator is None or self.translate_size is None:
            return self._inner(images)
        full = tuple(images.shape[-2:])
        small = _resize(images, self.translate_size)
        out = self._inner(small)
        if self.residual:
            return (images + _resize(out - small, full)).clamp(0, 1)
        return _resize(out, full).clamp(0, 1)


def build_pipeline(restorer: str | nn.Module | None = None, translator: str | nn.Module | None = None,
                   translate_size: int | None = None, residual: bool = True,
                   device: str | torch.device = "cpu") -> ImagePipeline | None:
    """Restorer by registry name, translator by engine checkpoint path (or modules); None if neither."""
    if restorer is None and translator is None:
        return None
    if isinstance(restorer, str):
        from taskbridge.registry import RESTORERS

        name = restorer
        restorer = RESTORERS.create(name)
        restorer.name = name  # type: ignore[union-attr]
    if isinstance(translator, str):
        translator = load_translator_checkpoint(translator, device)
    return ImagePipeline(restorer, translator, translate_size, residual).to(device).eval()


def load_translator_checkpoint(path: str, device: str | torch.device = "cpu") -> nn.Module:
    """`taskbridge.engine.checkpoint.load_translator`, imported lazily with a clear error if absent."""
    try:
        from taskbridge.engine.checkpoint import load_translator
    except ImportError as err:
        raise RuntimeError(
            "--translator needs taskbridge.engine.checkpoint.load_translator, which this installation "
            f"does not provide ({err}). Update taskbridge or evaluate without --translator."
        ) from err
    return load_translator(path, device=device)


def run_degradation(degrade: Callable[[Tensor], object], images: Tensor, seed: int | None) -> Tensor:
    """Apply a degradation to a batch under `seed` without touching the global RNG stream.

    Accepts modules returning a tensor, an `(images, params)` tuple, a dict with `image(s)`, or an
    object with an `.image(s)` attribute, so any degradation family member can be used.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        out = degrade(images)
    if isinstance(out, tuple):
        out = out[0]
    elif isinstance(out, dict):
        out = out.get("image", out.get("images"))
    elif not isinstance(out, Tensor):
        out = getattr(out, "image", getattr(out, "images", out))
    if not isinstance(out, Tensor):
        raise TypeError(f"degradation returned {type(out).__name__}; expected a tensor")
    return out.clamp(0, 1)
