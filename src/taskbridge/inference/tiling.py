"""Restoring photos of any size in bounded memory: tiles with enough context that they equal the whole.

A restorer declares how far an output pixel looks (`margin`) and what it needs from the whole photo
(`prepare`, e.g. DCP's atmospheric light). `tiled` runs it on `tile` x `tile` blocks, each computed
with `margin` pixels of real context on every side that has a neighbour (the photo's own border is
handled by the network as usual) and only the block itself kept: there is no seam to blend, and for a
network whose receptive radius is within the margin the result equals the untiled one (up to float
rounding; tests check 1/255). Photos above `context_pixels` get their global context from a copy
reduced to that many pixels, estimated once.

`restore_uint8` keeps the photo and the result as 8-bit tensors and converts one tile at a time to
float: a 12000 x 12000 photo then needs 2 x 432 MB plus a tile's working memory instead of several
1.7 GB float copies (docs/reliability.md has the measured peaks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.data.transforms import to_uint8

TILE = 1024  # output pixels per tile side
CONTEXT_PIXELS = 4_000_000  # photos larger than this get their global context from a reduced copy


def _context(restorer: nn.Module, image: Tensor, context_pixels: int) -> dict[str, object]:
    """`restorer.prepare` on the photo, or on a copy reduced to about `context_pixels` (aspect kept)."""
    prepare = getattr(restorer, "prepare", None)
    if prepare is None:
        return {}
    h, w = image.shape[-2:]
    small = image
    if h * w > context_pixels:
        r = (context_pixels / (h * w)) ** 0.5
        small = F.interpolate(image.float(), size=(max(1, round(h * r)), max(1, round(w * r))), mode="area")
    return prepare(small.float() / (255.0 if not image.is_floating_point() else 1.0), (h, w))


def tiled(restorer: nn.Module, image: Tensor, tile: int = TILE, context_pixels: int = CONTEXT_PIXELS,
          to_float: Callable[[Tensor], Tensor] | None = None, out: Tensor | None = None,
          finish: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """`restorer` over a [1, 3, H, W] photo in tiles (the whole photo at once when it fits in one tile).

    `to_float` turns a crop of `image` into the restorer's input, `finish` its output into what is
    stored in `out` (defaults: float in, float out). Restorers without a margin run untiled.
    """
    h, w = image.shape[-2:]
    to_float = to_float or (lambda x: x)
    finish = finish or (lambda x: x)
    margin_of = getattr(restorer, "margin", None)
    margin = margin_of(h, w) if margin_of is not None else None
    context = _context(restorer, image, context_pixels)
    if margin is None or (h <= tile and w <= tile):
        result = finish(restorer(to_float(image), **context))
        if out is None or out.shape != result.shape:  # e.g. a face restorer that upscales the photo
            return result
        out.copy_(result)
        return out
    if out is None:
        out = torch.empty(image.shape[:-3] + (3, h, w), dtype=image.dtype, device=image.device)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            ys, xs = max(0, y0 - margin), max(0, x0 - margin)
            ye, xe = min(h, y1 + margin), min(w, x1 + margin)
            res = restorer(to_float(image[..., ys:ye, xs:xe]), **context)
            out[..., y0:y1, x0:x1] = finish(res[..., y0 - ys:y1 - ys, x0 - xs:x1 - xs])
    return out


def to_unit(crop: Tensor) -> Tensor:
    """8-bit crop -> float [0, 1]."""
    return crop.float() / 255.0


@torch.no_grad()
def restore_uint8(restorer: nn.Module, image: Tensor, tile: int = TILE, context_pixels: int = CONTEXT_PIXELS) -> Tensor:
    """An 8-bit [3, H, W] photo restored into a new 8-bit photo, one float tile at a time."""
    out = torch.empty_like(image[None])
    return tiled(restorer, image[None], tile, context_pixels, to_float=to_unit, out=out, finish=to_uint8)[0]
