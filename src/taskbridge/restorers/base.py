"""Common base of every restorer: frozen, always in eval mode, checked NCHW [0, 1] RGB input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from taskbridge.state_dicts import flush_denormals, load_prefixed, unwrap_state

__all__ = ["FrozenRestorer", "clamp01", "flush_denormals", "load_prefixed", "unwrap_state"]


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


def clamp01(x: Tensor) -> Tensor:
    return torch.clamp(x, 0.0, 1.0)
