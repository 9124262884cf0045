"""Raw YOLOv5 head outputs -> candidate boxes in input pixels.

Per level, with s = sigmoid(raw): xy = (2 s_xy - 0.5 + grid) * stride, wh = (2 s_wh)^2 * anchor * stride,
objectness and class probabilities = s. Anchors are in grid units (pixels / stride).

`decode` is the differentiable path (what `candidates()` and union NMS use); `decode_flat_` is the
inference-only twin for the fused model: same arithmetic in the same order, done in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def level_grid(ny: int, nx: int, like: Tensor) -> Tensor:
    """(ny, nx, 2) cell offsets [x - 0.5, y - 0.5] in `like`'s device and dtype."""
    yv, xv = torch.meshgrid(torch.arange(ny, device=like.device, dtype=like.dtype),
                            torch.arange(nx, device=like.device, dtype=like.dtype), indexing="ij")
    return torch.stack((xv, yv), dim=-1) - 0.5


def decode_level(raw: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """(bs, na, ny, nx, no) raw -> (bs, na, ny, nx, no) decoded [cx, cy, w, h, obj, cls...] in pixels."""
    _, na, ny, nx, _ = raw.shape
    s = raw.sigmoid()
    grid = level_grid(ny, nx, raw).view(1, 1, ny, nx, 2)
    anchor_px = (anchors.to(raw) * stride).view(1, na, 1, 1, 2)
    xy = (s[..., :2] * 2 + grid) * stride
    wh = (s[..., 2:4] * 2) ** 2 * anchor_px
    return torch.cat((xy, wh, s[..., 4:]), dim=-1)


def decode(raw: Sequence[Tensor], anchors: Tensor, strides: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """All levels -> (decoded [bs, N, no], raw_flat [bs, N, no]) in the same anchor order.

    The flat raw vectors travel with the candidates so NMS can return each kept anchor's
    pre-sigmoid head vector (the NUQ feature).
    """
    dec, flat = [], []
    for i, r in enumerate(raw):
        bs, no = r.shape[0], r.shape[-1]
        dec.append(decode_level(r, anchors[i], float(strides[i])).reshape(bs, -1, no))
        flat.append(r.reshape(bs, -1, no))
    return torch.cat(dec, 1), torch.cat(flat, 1)


def decode_flat_(flat: Tensor, shapes: Sequence[tuple[int, int]], anchors_px: Sequence[Tensor],
                 strides: Sequence[float], grids: Sequence[Tensor]) -> Tensor:
    """Inference-only `decode`, in place on raw [bs, N, no] laid out as `decode` orders anchors.

    One sigmoid over the whole buffer, then the box terms per level on strided views, with the same
    arithmetic in the same order as `decode_level` (so equal to float rounding). Per level i the maps
    are `shapes[i]` = (ny, nx), `anchors_px[i]` is (1, na, 1, 1, 2) in pixels and `grids[i]` is
    `level_grid` viewed (1, 1, ny, nx, 2). Returns `flat`, now the decoded candidates.
    """
    bs, _, no = flat.shape
    flat.sigmoid_()
    off = 0
    for (ny, nx), anchor_px, stride, grid in zip(shapes, anchors_px, strides, grids, strict=True):
        na = anchor_px.shape[1]
        v = flat[:, off:off + na * ny * nx].view(bs, na, ny, nx, no)
        v[..., :2].mul_(2).add_(grid).mul_(stride)
        v[..., 2:4].mul_(2).pow_(2).mul_(anchor_px)
        off += na * ny * nx
    return flat
