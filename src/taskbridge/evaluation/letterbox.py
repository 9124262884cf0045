"""YOLOv5-style letterbox of one image tensor and the inverse mapping of boxes.

Modes: `square` pads to size x size; `min` pads only to the next multiple of `stride` (YOLOv5
`auto=True`); `rect` gives the shape YOLOv5's rectangular validation batches use for a single image
(short side rounded up to a stride multiple after adding half a stride of padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

PAD_VALUE = 114 / 255
MODES = ("square", "min", "rect")


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was mapped: out = in * ratio + (pad_left, pad_top); sizes are (h, w)."""

    ratio: float
    pad_left: float
    pad_top: float
    orig_size: tuple[int, int]
    new_size: tuple[int, int]

    def boxes_to_original(self, boxes: Tensor) -> Tensor:
        """xyxy boxes in letterboxed pixels -> pixels of the original image, clipped to it."""
        b = boxes.clone()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.pad_left) / self.ratio
        b[:, [1, 3]] = (b[:, [1, 3]] - self.pad_top) / self.ratio
        h, w = self.orig_size
        b[:, [0, 2]] = b[:, [0, 2]].clamp(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clamp(0, h)
        return b

    def boxes_to_letterbox(self, boxes: Tensor) -> Tensor:
        b = boxes.clone().float()
        b[:, [0, 2]] = b[:, [0, 2]] * self.ratio + self.pad_left
        b[:, [1, 3]] = b[:, [1, 3]] * self.ratio + self.pad_top
        return b


def letterbox_shape(h: int, w: int, size: int, stride: int, mode: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(resized (h, w), padded output (h, w)) for an input of h x w."""
    if mode not in MODES:
        raise ValueError(f"letterbox mode '{mode}' unknown; one of {', '.join(MODES)}")
    r = size / max(h, w)
    nh, nw = round(h * r), round(w * r)
    if mode == "square":
        return (nh, nw), (size, size)
    if mode == "min":
        return (nh, nw), (math.ceil(nh / stride) * stride, math.ceil(nw / stride) * stride)
    # rect: YOLOv5 val batch shape for aspect ratio h/w: both sides get +0.5 stride, so the long side is
    # padded too (640 -> 672)
    ar = h / w
    sh, sw = (ar, 1.0) if ar < 1 else (1.0, 1 / ar)
    return (nh, nw), (math.ceil(size * sh / stride + 0.5) * stride, math.ceil(size * sw / stride + 0.5) * stride)


def letterbox(image: Tensor, size: int = 640, stride: int = 32, mode: str = "min") -> tuple[Tensor, LetterboxInfo]:
    """Resize a CHW image so its long side is `size` (aspect kept) and pad centred with grey 114."""
    if image.ndim != 3:
        raise ValueError(f"letterbox takes one CHW image, got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    (nh, nw), (oh, ow) = letterbox_shape(h, w, size, stride, mode)
    x = image
    if (nh, nw) != (h, w):
        x = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=nh < h).clamp(0, 1)[0]
    dw, dh = (ow - nw) / 2, (oh - nh) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    out = torch.full((image.shape[0], oh, ow), PAD_VALUE, dtype=image.dtype, device=image.device)
    out[:, top: top + nh, left: left + nw] = x
    return out, LetterboxInfo(size / max(h, w), left, top, (h, w), (oh, ow))
