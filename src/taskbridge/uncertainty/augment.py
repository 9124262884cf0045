"""Optional strong augmentation of the translation flow's input and its pseudo-labels Y_L (REFERENCE §1.3).

The paper says no augmentation is used, so VaT runs with ``augment: false`` by default; the
reference code, however, augments the translation flow, and this module reproduces its set so
that behaviour can be switched on. Applied per image, in this order:

1. mosaic (p 0.8): a 2x2 mosaic of the image and three other batch images, each resized to half
   size into one quadrant (fixed centre, simpler than a random centre; see `_mosaic`);
2. scale-down (p 0.5): the image shrunk by s in [0.5, 1.0] and pasted at a random position on a
   gray canvas of the same size;
3. horizontal flip (p 0.5);
4. photometric gamma in [0.5, 1.3] times gain in [0.8, 1.1] (p 0.5; boxes unchanged);
5. cutout (p 0.5): 1-4 gray rectangles of 5-25 % of each side; boxes more than 60 % covered dropped.

Geometric steps move the boxes with the pixels, clip them to the area their pixels now occupy and
drop boxes narrower/shorter than 2 px or keeping under 20 % of their area. Rows are dropped and
(for mosaic) gathered from other images, so every per-row field of `Detections` is re-indexed the
same way, and `augment_batch_with_origin` returns where each kept row came from, for per-row
values kept outside `Detections` (uncertainty scores, weights); see `gather_rows`.
Plain torch; all randomness is drawn from one generator so a seeded call is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from taskbridge.tasks.base import Detections

FILL = 0.5  # gray of the scale-down canvas and of cutout rectangles
MIN_SIDE = 2.0  # px: narrower or shorter boxes are dropped after a geometric step
MIN_AREA_KEPT = 0.2  # boxes keeping less of their (transformed) area after clipping are dropped
CUTOUT_COUNT = (1, 4)  # rectangles per image, inclusive
CUTOUT_SIZE = (0.05, 0.25)  # rectangle side as a fraction of the image side
CUTOUT_MAX_COVER = 0.6  # boxes covered more than this are dropped

Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class AugmentPolicy(BaseModel):
    """Probabilities and ranges of each transform; the defaults are the reference code's."""

    model_config = ConfigDict(extra="forbid")

    flip: Prob = 0.5
    gamma_p: Prob = 0.5
    gamma: tuple[float, float] = (0.5, 1.3)
    gain: tuple[float, float] = (0.8, 1.1)
    scale_p: Prob = 0.5
    scale: tuple[float, float] = (0.5, 1.0)
    mosaic: Prob = 0.8
    cutout: Prob = 0.5

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentPolicy:
        for name in ("gamma", "gain", "scale"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"AugmentPolicy.{name}: low {lo} > high {hi}")
        if self.gamma[0] <= 0:
            raise ValueError("AugmentPolicy.gamma must be > 0")
        if self.gain[0] < 0:
            raise ValueError("AugmentPolicy.gain must be >= 0")
        if self.scale[0] <= 0 or self.scale[1] > 1:
            raise ValueError("AugmentPolicy.scale must lie in (0, 1] (scale-down only)")
        return self

    @classmethod
    def flip_gamma(cls) -> AugmentPolicy:
        """The module's former behaviour: flip and gamma/gain only, no geometry that drops boxes."""
        return cls(scale_p=0.0, mosaic=0.0, cutout=0.0)


def flip_detections(det: Detections, width: int) -> Detections:
    """Mirror boxes horizontally in an image `width` pixels wide (x1' = W - x2, x2' = W - x1)."""
    b = det.boxes
    boxes = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    return Detections(boxes, det.scores, det.labels, det.features, det.objectness, det.class_prob)


def gather_rows(values: Sequence[Tensor], origin: Sequence[Tensor]) -> list[Tensor]:
    """Re-index per-row values (one tensor per input image) like the augmented detections.

    `origin[i]` is the [N, 2] (source image, source row) table `augment_batch_with_origin`
    returns for output image i; use it for anything aligned with the input rows, e.g. u' scores.
    """
    if not values:
        return []
    flat = torch.cat(list(values))
    offsets = torch.tensor([0] + [len(v) for v in values], device=flat.device).cumsum(0)
    return [flat[offsets[o[:, 0].to(flat.device)] + o[:, 1].to(flat.device)] for o in origin]


@torch.no_grad()
def augment_batch(
    images: Tensor,
    dets: Sequence[Detections],
    policy: AugmentPolicy | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[Detections]]:
    """Augment images [B, 3, H, W] in [0, 1] and move their detections into the new pixel frame.

    `policy` None is the full reference policy. Returns new images of the same shape and one
    `Detections` per output image (rows may be dropped or, with mosaic, come from other images).
    """
    out, new, _ = augment_batch_with_origin(images, dets, policy, generator)
    return out, new


@torch.no_grad()
def augment_batch_with_origin(
    images: Tensor,
    dets: Sequence[Detections],
    policy: AugmentPolicy | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[Detections], list[Tensor]]:
    """`augment_batch` plus, per output image, the [N, 2] long (source image, source row) of each row."""
    policy = policy if policy is not None else AugmentPolicy()
    if images.ndim != 4:
        raise ValueError(f"augment_batch: images must be [B, C, H, W], got {tuple(images.shape)}")
    if len(dets) != images.shape[0]:
        raise ValueError(f"augment_batch: {len(dets)} detections for {images.shape[0]} images")
    rng = _Rng(generator)
    rows = [_Rows.of(i, d) for i, d in enumerate(dets)]
    out = images.clone()
    if policy.mosaic > 0:
        out, rows = _mosaic(images, rows, policy.mosaic, rng)
    if policy.scale_p > 0:
        out, rows = _scale(out, rows, policy.scale_p, policy.scale, rng)
    if policy.flip > 0:
        out, rows = _flip(out, rows, policy.flip, rng)
    if policy.gamma_p > 0:
        out = _gamma_gain(out, policy.gamma_p, policy.gamma, policy.gain, rng)
    if policy.cutout > 0:
        out, rows = _cutout(out, rows, policy.cutout, rng)
    new = [_assemble(dets, r, i) for i, r in enumerate(rows)]
    return out, new, [torch.stack([r.src, r.row], dim=1) for r in rows]


# ------------------------------------------------------------------------------------ internals
class _Rng:
    """Draws everything on the generator's device (CPU by default) so seeds reproduce across devices."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.g = generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.g, device=self.device)

    def randint(self, low: int, high: int, n: int) -> Tensor:
        return torch.randint(low, high, (n,), generator=self.g, device=self.device)

    def perm(self, n: int) -> Tensor:
        return torch.randperm(n, generator=self.g, device=self.device)


@dataclass
class _Rows:
    """The boxes of one output image and, per row, the (source image, source row) they came from."""

    src: Tensor  # [N] long
    row: Tensor  # [N] long
    boxes: Tensor  # [N, 4] xyxy in the current pixel frame

    @staticmethod
    def of(i: int, d: Detections) -> _Rows:
        n, dev = len(d), d.boxes.device
        return _Rows(torch.full((n,), i, dtype=torch.long, device=dev), torch.arange(n, device=dev), d.boxes)

    def keep(self, mask: Tensor) -> _Rows:
        return _Rows(self.src[mask], self.row[mask], self.boxes[mask])

    @staticmethod
    def cat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(torch.cat([getattr(p, n) for p in parts]) for n in ("src", "row", "boxes")))


def _affine(r: _Rows, sx: float, sy: float, ox: float, oy: float, region: tuple[float, float, float, float]) -> _Rows:
    """Scale then shift boxes, clip them to `region` (x1, y1, x2, y2) and drop degenerate ones."""
    b = r.boxes if r.boxes.is_floating_point() else r.boxes.float()
    b = b * b.new_tensor([sx, sy, sx, sy]) + b.new_tensor([ox, oy, ox, oy])
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    x1, y1, x2, y2 = region
    c = torch.stack([b[:, 0].clamp(x1, x2), b[:, 1].clamp(y1, y2), b[:, 2].clamp(x1, x2), b[:, 3].clamp(y1, y2)], 1)
    cw, ch = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    keep = (cw >= MIN_SIDE) & (ch >= MIN_SIDE) & (cw * ch >= MIN_AREA_KEPT * area)
    return _Rows(r.src[keep], r.row[keep], c[keep])


def _resize(img: Tensor, h: int, w: int) -> Tensor:
    """Downscale one [C, H, W] image by pixel-area averaging (the reference's INTER_AREA; no aliasing, no overshoot)."""
    if img.shape[-2:] == (h, w):
        return img
    return F.interpolate(img[None], size=(h, w), mode="area")[0]


def _mosaic(images: Tensor, rows: list[_Rows], p: float, rng: _Rng) -> tuple[Tensor, list[_Rows]]:
    """2x2 mosaic with a fixed centre: each of the four images is resized to its quadrant.

    The reference's random-centre variant crops differently per quadrant; the fixed centre keeps
    every source fully visible (no box lost to a crop) and its boxes only scale by the quadrant
    factor, which is simpler and still gives the detector 4x the objects at half the size. The
    image itself goes to a random quadrant; partners are three other batch images drawn without
    replacement (with replacement, including itself when B == 1, if the batch has under 4 images).
    """
    b, _, h, w = images.shape
    apply = rng.rand(b) < p
    out, new = images.clone(), list(rows)
    hs, ws = (h // 2, h - h // 2), (w // 2, w - w // 2)
    for i in torch.nonzero(apply).flatten().tolist():
        others = [j for j in range(b) if j != i]
        if len(others) >= 3:
            partners = [others[k] for k in rng.perm(len(others))[:3].tolist()]
        elif others:
            partners = [others[k] for k in rng.randint(0, len(others), 3).tolist()]
        else:
            partners = [i, i, i]
        sources = [i, *partners]
        order = rng.perm(4).tolist()  # quadrant q shows sources[order[q]]
        parts = []
        for q in range(4):
            j, qy, qx = sources[order[q]], q // 2, q % 2
            hq, wq, y0, x0 = hs[qy], ws[qx], qy * hs[0], qx * ws[0]
            out[i, :, y0:y0 + hq, x0:x0 + wq] = _resize(images[j], hq, wq)
            parts.append(_affine(rows[j], wq / w, hq / h, x0, y0, (x0, y0, x0 + wq, y0 + hq)))
        new[i] = _Rows.cat(parts)
    return out, new


def _scale(images: Tensor, rows: list[_Rows], p: float, scale: tuple[float, float],
           rng: _Rng) -> tuple[Tensor, list[_Rows]]:
    """Shrink by s and paste at a random position on a FILL canvas: smaller objects, same frame size."""
    b, _, h, w = images.shape
    apply, s, uy, ux = rng.rand(b) < p, rng.rand(b), rng.rand(b), rng.rand(b)
    out, new = images.clone(), list(rows)
    for i in torch.nonzero(apply).flatten().tolist():
        f = scale[0] + (scale[1] - scale[0]) * float(s[i])
        hn, wn = max(1, round(h * f)), max(1, round(w * f))
        y0, x0 = min(int(float(uy[i]) * (h - hn + 1)), h - hn), min(int(float(ux[i]) * (w - wn + 1)), w - wn)
        out[i].fill_(FILL)
        out[i, :, y0:y0 + hn, x0:x0 + wn] = _resize(images[i], hn, wn)
        new[i] = _affine(rows[i], wn / w, hn / h, x0, y0, (x0, y0, x0 + wn, y0 + hn))
    return out, new


def _flip(images: Tensor, rows: list[_Rows], p: float, rng: _Rng) -> tuple[Tensor, list[_Rows]]:
    """Horizontal mirror; boxes mirrored, none dropped."""
    w = images.shape[-1]
    flip = (rng.rand(images.shape[0]) < p).to(images.device)
    out = torch.where(flip[:, None, None, None], images.flip(-1), images)
    new = []
    for r, f in zip(rows, flip.tolist(), strict=True):
        bx = r.boxes
        new.append(_Rows(r.src, r.row, torch.stack([w - bx[:, 2], bx[:, 1], w - bx[:, 0], bx[:, 3]], 1)) if f else r)
    return out, new


def _gamma_gain(images: Tensor, p: float, gamma: tuple[float, float], gain: tuple[float, float],
                rng: _Rng) -> Tensor:
    """x ** g * k clamped to [0, 1]: exposure/contrast jitter; geometry untouched."""
    b, dev = images.shape[0], images.device
    apply = (rng.rand(b) < p).to(dev)
    g = (gamma[0] + (gamma[1] - gamma[0]) * rng.rand(b)).to(dev, images.dtype)[:, None, None, None]
    k = (gain[0] + (gain[1] - gain[0]) * rng.rand(b)).to(dev, images.dtype)[:, None, None, None]
    adjusted = (images.clamp(0, 1) ** g * k).clamp(0, 1)
    return torch.where(apply[:, None, None, None], adjusted, images)


def _cutout(images: Tensor, rows: list[_Rows], p: float, rng: _Rng) -> tuple[Tensor, list[_Rows]]:
    """Gray rectangles hide parts of objects; boxes mostly hidden (union of rectangles) are dropped."""
    b, _, h, w = images.shape
    apply = rng.rand(b) < p
    out, new = images.clone(), list(rows)
    lo, hi = CUTOUT_SIZE
    for i in torch.nonzero(apply).flatten().tolist():
        n = int(rng.randint(CUTOUT_COUNT[0], CUTOUT_COUNT[1] + 1, 1))
        size, pos = lo + (hi - lo) * rng.rand(n, 2), rng.rand(n, 2)
        mask = torch.zeros(h, w, dtype=torch.bool, device=images.device)
        for (fh, fw), (py, px) in zip(size.tolist(), pos.tolist(), strict=True):
            rh, rw = max(1, round(fh * h)), max(1, round(fw * w))
            y0, x0 = min(int(py * (h - rh + 1)), h - rh), min(int(px * (w - rw + 1)), w - rw)
            mask[y0:y0 + rh, x0:x0 + rw] = True
        out[i][:, mask] = FILL
        r = rows[i]
        if len(r.src):
            new[i] = r.keep(_covered(mask, r.boxes) <= CUTOUT_MAX_COVER)
    return out, new


def _covered(mask: Tensor, boxes: Tensor) -> Tensor:
    """Fraction of each box's pixels (coordinates rounded to the pixel grid) that `mask` covers."""
    h, w = mask.shape
    ii = F.pad(mask.long().cumsum(0).cumsum(1), (1, 0, 1, 0))  # integral image, [H + 1, W + 1]
    bx = boxes.round().long().to(mask.device)
    x1, x2 = bx[:, 0].clamp(0, w), bx[:, 2].clamp(0, w)
    y1, y2 = bx[:, 1].clamp(0, h), bx[:, 3].clamp(0, h)
    x2, y2 = torch.maximum(x1, x2), torch.maximum(y1, y2)
    cov = ii[y2, x2] - ii[y1, x2] - ii[y2, x1] + ii[y1, x1]
    area = ((x2 - x1) * (y2 - y1)).clamp(min=1)
    return (cov.float() / area.float()).to(boxes.device)


def _assemble(dets: Sequence[Detections], r: _Rows, own: int) -> Detections:
    """Gather the kept rows from their source detections, every per-row field indexed alike."""
    if len(r.src) == 0:
        d = dets[own].select(torch.zeros(0, dtype=torch.long, device=dets[own].boxes.device))
        return Detections(r.boxes.reshape(0, 4), d.scores, d.labels, d.features, d.objectness, d.class_prob)
    srcs, counts = torch.unique_consecutive(r.src, return_counts=True)
    parts, start = [], 0
    for j, n in zip(srcs.tolist(), counts.tolist(), strict=True):
        rows = r.row[start:start + n]
        parts.append(dets[j].select(rows.to(dets[j].boxes.device)))
        start += n
    if len(parts) == 1:
        d = parts[0]
        return Detections(r.boxes, d.scores, d.labels, d.features, d.objectness, d.class_prob)

    def field(name: str) -> Tensor | None:
        vals = [getattr(p, name) for p in parts]
        if all(v is None for v in vals):
            return None
        if any(v is None for v in vals):
            raise ValueError(f"augment_batch: mosaic mixes detections with and without `{name}`")
        return torch.cat(vals)

    return Detections(r.boxes, torch.cat([p.scores for p in parts]), torch.cat([p.labels for p in parts]),
                      field("features"), field("objectness"), field("class_prob"))
