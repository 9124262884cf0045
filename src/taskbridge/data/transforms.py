"""Geometric transforms that keep boxes in step with the pixels: letterbox, resize, pad.

`letterbox` reproduces YOLOv5's `letterbox()` arithmetic exactly, because detector numbers are
only comparable with the reference when the input geometry is identical:

- ratio ``r = min(new_h / h, new_w / w)`` (``min(r, 1)`` when ``scaleup=False``);
- resized size ``(round(w r), round(h r))`` with Python's ``round`` (half to even), as YOLOv5;
- padding ``dw = new_w - round(w r)`` (``dw % stride`` when ``auto=True``), halved, and split as
  ``left = round(dw/2 - 0.1)``, ``right = round(dw/2 + 0.1)`` (same for top/bottom), so an odd
  padding puts the extra pixel on the right/bottom;
- fill 114/255 grey; the resize is one of `RESIZE_METHODS`:
  ``bilinear`` (default; differentiable torch bilinear, half-pixel centres, no antialiasing: the
  arithmetic of OpenCV's ``INTER_LINEAR``), ``cv2`` (OpenCV ``INTER_LINEAR`` itself on the 8-bit
  image, exactly what YOLOv5 and the reference protocol feed the detector; evaluation's default)
  or ``antialias`` (torch bilinear with an antialiasing filter when shrinking).

[decision] Evaluation resizes with OpenCV itself: OpenCV's 8-bit ``INTER_LINEAR`` works in
fixed point with SIMD rounding (and switches to area averaging for an exact 2x shrink), so float
bilinear plus rounding differs by one grey level on ~10 % of the pixels of a DAWN photo, which
moved the bicycle AP of YOLOv5n by 0.009 (13 objects); with ``cv2`` every per-class AP equals the
reference's (docs/results.md §1).

Box mapping for targets uses YOLOv5's convention: ``x' = x r + dw/2`` with the *unrounded* half
padding ``dw/2``; the integer border actually drawn can differ from it by 0.5 px, which is recorded
in `LetterboxMeta.border`. Detections go back with `scale_boxes`, YOLOv5's own inverse (gain and
padding recomputed from the letterboxed shape), as the reference protocol does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LETTERBOX_FILL = 114 / 255
RESIZE_METHODS = ("bilinear", "cv2", "antialias")


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


def to_uint8(image: Tensor) -> Tensor:
    """float [0, 1] -> the 8-bit values an image file would hold: round(255 x), half to even (like numpy)."""
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8)


def quantize8(image: Tensor) -> Tensor:
    """The values an 8-bit image file would hold: round(255 x) / 255 (half to even, like numpy), in [0, 1]."""
    return (image.clamp(0, 1) * 255.0).round() / 255.0


def resize_image(image: Tensor, hw: tuple[int, int], method: str = "bilinear") -> Tensor:
    """Resize CHW or NCHW `image` to `hw` with one of `RESIZE_METHODS` (see the module docstring)."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method '{method}' unknown; one of {', '.join(RESIZE_METHODS)}")
    hw = (int(hw[0]), int(hw[1]))
    if tuple(image.shape[-2:]) == hw:
        return image
    batched = image.ndim == 4
    x = image if batched else image.unsqueeze(0)
    if method == "cv2":
        y = _resize_cv2(x, hw)
    else:
        shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
        y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=method == "antialias" and shrink)
    return y if batched else y.squeeze(0)


def _resize_cv2(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """OpenCV INTER_LINEAR on the 8-bit image (the input is quantised first, as a saved photo is)."""
    import cv2
    import numpy as np

    out = []
    for img in x:
        u8 = to_uint8(img.detach()).permute(1, 2, 0).cpu().numpy()
        r = cv2.resize(np.ascontiguousarray(u8), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        r = r[..., None] if r.ndim == 2 else r
        out.append(torch.from_numpy(r).permute(2, 0, 1))
    return (torch.stack(out).to(x.device, torch.float32) / 255.0).to(x.dtype)


def letterbox(
    image: Tensor,
    size: int | Sequence[int] = 640,
    stride: int = 32,
    auto: bool = False,
    fill: float = LETTERBOX_FILL,
    scaleup: bool = True,
    resize: str = "bilinear",
) -> tuple[Tensor, LetterboxMeta]:
    """Resize keeping aspect and pad to `size` (or to a multiple of `stride` when `auto`), as YOLOv5.

    `image` is CHW or NCHW float; `resize` is one of `RESIZE_METHODS`. Returns the letterboxed
    image and the `LetterboxMeta`.
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
    out = resize_image(image, (unpad_h, unpad_w), resize)
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


def scale_boxes(boxes: Tensor, letterboxed_hw: tuple[int, int], orig_hw: tuple[int, int], clip: bool = True) -> Tensor:
    """xyxy boxes in letterboxed pixels -> original pixels exactly as YOLOv5's `scale_boxes` does it:
    gain = min(h1 / h0, w1 / w0) and the padding recomputed from the letterboxed shape (h1, w1), which can
    differ from the letterbox's own ratio and half padding by a fraction of a pixel; clipped to the image."""
    (h1, w1), (h0, w0) = letterboxed_hw, orig_hw
    gain = min(h1 / h0, w1 / w0)
    pad_w, pad_h = (w1 - w0 * gain) / 2, (h1 - h0 * gain) / 2
    b = boxes.clone()
    b[..., 0::2] = (b[..., 0::2] - pad_w) / gain
    b[..., 1::2] = (b[..., 1::2] - pad_h) / gain
    if clip:
        b[..., 0::2] = b[..., 0::2].clamp(0, w0)
        b[..., 1::2] = b[..., 1::2].clamp(0, h0)
    return b


def yolov5_rect_shape(h: int, w: int, size: int, stride: int) -> tuple[int, int]:
    """The (h, w) YOLOv5's rectangular validation batches give one image: short side rounded up to a stride
    multiple after adding half a stride (both sides get +0.5 stride, so 640 -> 672 on the long side)."""
    ar = h / w
    sh, sw = (ar, 1.0) if ar < 1 else (1.0, 1 / ar)
    return math.ceil(size * sh / stride + 0.5) * stride, math.ceil(size * sw / stride + 0.5) * stride


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
