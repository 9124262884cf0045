"""Inference-only YOLOv5: Conv+BN folded, activations in place, fast exact max-pool, lean decode.

`raw()`/`candidates()`/`loss()` keep the unfused graph (the same function in train and eval mode,
differentiable w.r.t. the image). Detection under `no_grad` needs none of that, and the unfused graph
costs a BatchNorm pass per convolution, out-of-place SiLU copies, SPPF's stock NCHW max-pool (slow on
CPU: k * k reads per output, plus argmax indices), permuted copies of the head maps and a second concatenation of
the raw head vectors. Here the head writes the decode layout directly and the decode runs in place.
`FusedYOLOv5` is a separate copy built from the frozen model; the task keeps it out of its module
tree (so it is in neither `state_dict()` nor `parameters()`) and rebuilds it when moved or reloaded.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .decode import decode_flat_, level_grid
from .layers import Conv, SeparableMaxPool2d
from .model import Detect, YOLOv5Model, run_graph


def _same_max_pool(m: nn.Module) -> bool:
    """An odd k x k, stride-1 max-pool padded to keep the size (SPPF's), in its default settings."""
    return (isinstance(m, nn.MaxPool2d) and isinstance(m.kernel_size, int) and m.kernel_size % 2 == 1
            and m.stride in (1, (1, 1)) and m.padding in (m.kernel_size // 2, (m.kernel_size // 2,) * 2)
            and m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices)


def to_inference(module: nn.Module) -> nn.Module:
    """Swap, in place and recursively (`module` itself included), every `Conv` for its folded
    `FusedConv` and every SPPF-style max-pool for the exact `SeparableMaxPool2d`; keeps `f`/`i`."""
    if isinstance(module, Conv):
        new: nn.Module = module.fused()
    elif _same_max_pool(module):
        new = SeparableMaxPool2d(module.kernel_size)  # type: ignore[arg-type]
    else:
        for name, child in module.named_children():
            setattr(module, name, to_inference(child))
        return module
    for attr in ("f", "i"):
        if hasattr(module, attr):
            setattr(new, attr, getattr(module, attr))
    return new


class FlatHead(nn.Module):
    """Detect's 1x1 prediction convolutions as batched GEMMs that write straight into the [bs, N, no]
    anchor-major layout `decode` returns, so the head maps are never permuted and copied.

    A 1x1 conv is out[a, pos, k] = sum_c x[c, pos] * w[a * no + k, c] + b[a * no + k]: per image and level
    one `baddbmm` over the na anchors, reading the NCHW features transposed (no copy).
    Returns (raw [bs, N, no] pre-sigmoid, per-level (ny, nx)).
    """

    def __init__(self, det: Detect) -> None:
        super().__init__()
        self.f, self.i = det.f, det.i
        self.na, self.no = det.na, det.no
        for i, conv in enumerate(det.m):
            w = conv.weight.detach().view(det.na, det.no, -1)
            self.register_buffer(f"w{i}", w.transpose(1, 2).contiguous())  # (na, c, no)
            self.register_buffer(f"b{i}", conv.bias.detach().view(det.na, 1, det.no).clone())

    def forward(self, xs: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        bs = xs[0].shape[0]
        shapes = [(x.shape[-2], x.shape[-1]) for x in xs]
        out = xs[0].new_empty(bs, sum(self.na * h * w for h, w in shapes), self.no)
        off = 0
        for i, x in enumerate(xs):
            c, k = x.shape[1], x.shape[-2] * x.shape[-1]
            w, b = getattr(self, f"w{i}"), getattr(self, f"b{i}")
            for j in range(bs):
                xt = x[j].reshape(c, k).t().expand(self.na, k, c)
                torch.baddbmm(b, xt, w, out=out[j, off:off + self.na * k].view(self.na, k, self.no))
            off += self.na * k
        return out, shapes


class FusedYOLOv5(nn.Module):
    """Inference twin of a `YOLOv5Model`, in the model's current device and dtype; no gradients."""

    def __init__(self, model: YOLOv5Model) -> None:
        super().__init__()
        det = model.detect
        body = [to_inference(copy.deepcopy(m)) for m in model.model[:-1]]
        self.model = nn.Sequential(*body, FlatHead(det))
        self.save = list(model.save)
        self.nl, self.na, self.no = det.nl, det.na, det.no
        self.strides = [float(s) for s in det.stride]
        # Per level (1, na, 1, 1, 2) anchor sizes in pixels, as `decode_level` broadcasts them.
        px = torch.stack([a * s for a, s in zip(det.anchors, self.strides, strict=True)])
        self.register_buffer("anchors_px", px.view(self.nl, 1, self.na, 1, 1, 2).clone())
        self._grids: dict[tuple[Any, ...], Tensor] = {}
        self.requires_grad_(False).eval()

    def flat_raw(self, x: Tensor) -> tuple[Tensor, list[tuple[int, int]]]:
        """(raw [bs, N, 5 + nc] pre-sigmoid in `decode`'s anchor order, per-level (ny, nx))."""
        return run_graph(self.model, self.save, x)

    @torch.no_grad()
    def raw(self, x: Tensor) -> list[Tensor]:
        """Same as `YOLOv5Model.forward`: (bs, na, ny, nx, no) per level, pre-sigmoid."""
        flat, shapes = self.flat_raw(x)
        out, off = [], 0
        for ny, nx in shapes:
            k = self.na * ny * nx
            out.append(flat[:, off:off + k].reshape(x.shape[0], self.na, ny, nx, self.no).contiguous())
            off += k
        return out

    def _grid(self, level: int, ny: int, nx: int, like: Tensor) -> Tensor:
        """(1, 1, ny, nx, 2) cell offsets, cached: they depend only on the map size (and where it lives)."""
        key = (level, ny, nx, like.device, like.dtype)
        if key not in self._grids:
            self._grids[key] = level_grid(ny, nx, like).view(1, 1, ny, nx, 2)
        return self._grids[key]

    @torch.no_grad()
    def forward(self, x: Tensor, return_raw: bool = False) -> tuple[Tensor, Tensor | None]:
        """(decoded [bs, N, 5 + nc], raw [bs, N, 5 + nc] or None), like `decode(model(x), ...)`.

        The raw head vectors (NUQ features) cost a copy, so they are kept only when asked.
        """
        flat, shapes = self.flat_raw(x)
        raw = flat.clone() if return_raw else None
        grids = [self._grid(i, ny, nx, flat) for i, (ny, nx) in enumerate(shapes)]
        return decode_flat_(flat, shapes, list(self.anchors_px), self.strides, grids), raw
