"""Geometric transforms that keep boxes in step with the pixels: letterbox, resize, pad.

`letterbox` reproduces YOLOv5's `letterbox()` arithmetic exactly, because detector numbers are
only comparable with the reference when the input geometry is identical:

- ratio ``r = min(new_h / h, new_w / w)`` (``min(r, 1)`` when ``scaleup=False``);
- resized size ``(round(w r), round(h r))`` with Python's ``round`` (half to even), as YOLOv5;
- padding ``dw = new_w - round(w r)`` (``dw % stride`` when ``auto=True``), halved, and split as
  ``left = round(dw/2 - 0.1)``, ``right = round(dw/2 + 0.1)`` (same for top/bottom), so an odd
  padding puts the extra pixel on the right/bottom;
- fill 114/255 grey; resize is bilinear with half-pixel centres and no antialiasing, the
  arithmetic of OpenCV's ``INTER_LINEAR`` that YOLOv5 uses (values may differ from OpenCV by
  rounding of the 8-bit input only).

Box mapping uses YOLOv5's convention: ``x' = x r + dw/2`` with the *unrounded* half padding
``dw/2`` (what YOLOv5 passes to `scale_boxes` and uses for training targets); the integer border
actually drawn can differ from it by 0.5 px, which is recorded in `LetterboxMeta.border`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LETTERBOX_FILL = 114 / 255


@dataclass(frozen=True)
class LetterboxMeta:
    """How an image was letterboxed: enough to map boxes both ways."""

    scale: float  # r: resized = original * r
    pad_left: float  # dw / 2 (unrounded, YOLOv5 convention)
    pad_top: float  # dh / 2
    orig_size: tuple[int, int]  # (h, w) before letterboxing
    new_size: tuple[int, int] = (0, 0)  # (h, w) after letterboxing
    border: tuple[int, int, int, int] = (0, 0, 0, 0)  # integer pixels drawn: left, top, right, bottom


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    s = tuple(int(v) for v in size)
    if len(s) != 2:
        raise ValueError(f"size must be an int or (h, w), got {size!r}")
    return s  # type: ignore[return-value]


def resize_image(image: Tensor, hw: tuple[int, int]) -> Tensor:
    """Bilinear, half-pixel centres, no antialias (OpenCV INTER_LINEAR arithmetic); CHW or NCHW."""
    hw = (int(hw[0]), int(hw[1]))
    if tuple(image.shape[-2:]) == hw:
        return image
    batched = image.ndim == 4
    x = image if batched else image.unsqueeze(0)
    y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)
    return y if batched else y.squeeze(0)


def letterbox(
    image: Tensor,
    size: int | Sequence[int] = 640,
    stride: int = 32,
    auto: bool = False,
    fill: float = LETTERBOX_FILL,
    scaleup: bool = True,
) -> tuple[Tensor, LetterboxMeta]:
    """Resize keeping aspect and pad to `size` (or to a multiple of `stride` when `auto`), as YOLOv5.

    `image` is CHW or NCHW float; returns the letterboxed image and the `LetterboxMeta`.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"letterbox expects CHW or NCHW, got shape {tuple(image.shape)}")
    h, w = int(image.shape[-2]), int(image.shape[-1])
    new_h, new_w = as_hw(size)
    r = min(new_h / h, new_w / w)
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = max(1, int(round(w * r))), max(1, int(round(h * r)))  # YOLOv5 crashes on 0
    dw, dh = new_w - unpad_w, new_h - unpad_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw2, dh2 = dw / 2, dh / 2
    out = resize_image(image, (unpad_h, unpad_w))
    top, bottom = int(round(dh2 - 0.1)), int(round(dh2 + 0.1))
    left, right = int(round(dw2 - 0.1)), int(round(dw2 + 0.1))
    if top or bottom or left or right:
        out = F.pad(out, (left, right, top, bottom), mode="constant", value=float(fill))
    meta = LetterboxMeta(
        scale=r, pad_left=dw2, pad_top=dh2, orig_size=(h, w),
        new_size=(int(out.shape[-2]), int(out.shape[-1])), border=(left, top, right, bottom),
    )
    return out, meta


def letterbox_boxes(boxes: Tensor, meta: LetterboxMeta) -> Tensor:
    """xyxy boxes in original pixels -> pixels of the letterboxed image."""
    b = boxes.clone()
    b[..., 0::2] = b[..., 0::2] * meta.scale + meta.pad_left
    b[..., 1::2] = b[..., 1::2] * meta.scale + meta.pad_top
    return b


def unletterbox_boxes(boxes: Tensor, meta: LetterboxMeta, clip: bool = True) -> Tensor:
    """xyxy boxes in letterboxed pixels -> original pixels (YOLOv5 `scale_boxes`), clipped to the image."""
    b = boxes.clone()
    b[..., 0::2] = (b[..., 0::2] - meta.pad_left) / meta.scale
    b[..., 1::2] = (b[..., 1::2] - meta.pad_top) / meta.scale
    if clip:
        h, w = meta.orig_size
        b[..., 0::2] = b[..., 0::2].clamp(0, w)
        b[..., 1::2] = b[..., 1::2].clamp(0, h)
    return b


def resize_with_boxes(
    image: Tensor,
    boxes: Tensor | None,
    size: int | Sequence[int],
    keep_aspect: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Resize CHW/NCHW `image` to `size` (h, w), or long side = `size` with `keep_aspect`; scale boxes alike."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if keep_aspect:
        if not isinstance(size, int):
            raise ValueError("keep_aspect=True needs an int size (the long side)")
        r = size / max(h, w)
        new_h, new_w = max(1, int(round(h * r))), max(1, int(round(w * r)))
    else:
        new_h, new_w = as_hw(size)
    out = resize_image(image, (new_h, new_w))
    if boxes is None:
        return out, None
    b = boxes.clone().float()
    b[..., 0::2] *= new_w / w
    b[..., 1::2] *= new_h / h
    return out, b


def pad_to_multiple(
    images: Tensor | Sequence[Tensor],
    multiple: int,
    value: float = 0.0,
    mode: str = "constant",
) -> Tensor:
    """Pad bottom/right so H and W are multiples of `multiple` (networks with down-sampling need it).

    Padding only at the bottom/right keeps every pixel (and box) coordinate unchanged; crop the
    output back with ``[..., :h, :w]``. A list of CHW images of different sizes is padded to a
    common size and stacked. `mode` is "constant" (with `value`), "reflect" or "replicate"
    ("reflect" falls back to "replicate" where the image is too small to mirror).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if mode not in ("constant", "reflect", "replicate"):
        raise ValueError(f"mode must be constant, reflect or replicate, got {mode!r}")
    if isinstance(images, Tensor):
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        out = _pad_batch(batch, multiple, value, mode, (batch.shape[-2], batch.shape[-1]))
        return out if images.ndim == 4 else out.squeeze(0)
    imgs = list(images)
    if not imgs:
        raise ValueError("pad_to_multiple got an empty list")
    th = max(int(i.shape[-2]) for i in imgs)
    tw = max(int(i.shape[-1]) for i in imgs)
    return torch.cat([_pad_batch(i.unsqueeze(0), multiple, value, mode, (th, tw)) for i in imgs])


def _pad_batch(x: Tensor, multiple: int, value: float, mode: str, target: tuple[int, int]) -> Tensor:
    h, w = x.shape[-2:]
    th = -(-int(target[0]) // multiple) * multiple
    tw = -(-int(target[1]) // multiple) * multiple
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    if mode == "constant":
        return F.pad(x, (0, pw, 0, ph), mode="constant", value=value)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
