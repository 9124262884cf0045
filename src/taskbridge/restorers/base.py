"""Common base of every restorer: frozen, always in eval mode, checked NCHW [0, 1] RGB input."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class FrozenRestorer(nn.Module):
    """A restorer maps `degraded [B,3,H,W] in [0,1] -> restored [B,3,H,W] in [0,1]`.

    Frozen means frozen: no parameter requires grad and normalisation layers never leave eval
    mode, so a translator trained around a restorer cannot silently change it. Gradients still
    flow to the *input* (nothing runs under `no_grad`), which methods may need.

    Large photos are restored in tiles (`taskbridge.inference.tiling`): `margin(h, w)` is how far
    an output pixel of an h x w photo looks (its receptive radius; each tile is computed with that
    much context and only its centre kept, so tiles equal the whole), and `prepare(images, size)`
    returns what the restorer needs from the whole photo of that (h, w) `size` (DCP's atmospheric
    light; `images` may be a reduced copy of it), passed to every tile as `forward(tile, **context)`.
    `margin` None: not tileable.
    """

    def margin(self, h: int, w: int) -> int | None:
        return None

    def prepare(self, images: Tensor, size: tuple[int, int]) -> dict[str, object]:
        return {}

    def freeze(self) -> FrozenRestorer:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenRestorer:  # noqa: ARG002 - always eval
        return super().train(False)

    @staticmethod
    def check_input(images: Tensor) -> None:
        """Fail with the shape that was given instead of a cryptic conv error."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"restorers take RGB images as a [B, 3, H, W] float tensor in [0, 1]; got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"restorers take float images in [0, 1]; got dtype {images.dtype} (divide by 255)")


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


def clamp01(x: Tensor) -> Tensor:
    return torch.clamp(x, 0.0, 1.0)
