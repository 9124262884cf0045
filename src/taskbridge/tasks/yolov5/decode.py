"""Raw YOLOv5 head outputs -> candidate boxes in input pixels.

Per level, with s = sigmoid(raw): xy = (2 s_xy - 0.5 + grid) * stride, wh = (2 s_wh)^2 * anchor * stride,
objectness and class probabilities = s. Anchors are in grid units (pixels / stride).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def decode_level(raw: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """(bs, na, ny, nx, no) raw -> (bs, na, ny, nx, no) decoded [cx, cy, w, h, obj, cls...] in pixels."""
    _, na, ny, nx, _ = raw.shape
    s = raw.sigmoid()
    yv, xv = torch.meshgrid(torch.arange(ny, device=raw.device, dtype=raw.dtype),
                            torch.arange(nx, device=raw.device, dtype=raw.dtype), indexing="ij")
    grid = torch.stack((xv, yv), dim=-1).view(1, 1, ny, nx, 2) - 0.5
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
