"""YOLOv5 training loss, extended with per-target weights and soft objectness targets (VaT).

With every weight 1, no soft targets and no background weight, this is the public YOLOv5 loss:
targets are assigned to anchors whose width/height ratio to the box is below `anchor_t` on each
level, and to the cell holding the box centre plus the two neighbouring cells closest to it
(offset g = 0.5); box loss = 1 - CIoU; objectness target = detached CIoU clamped at 0 on assigned
cells, 0 elsewhere; class loss = BCE against one-hot labels; per-level objectness balance
[4, 1, 0.4]; gains box/obj/cls; total multiplied by the batch size.

Extensions (REFERENCE section 1.5):
- each hard target's box, class and (assigned-cell) objectness terms are multiplied by its weight;
  `normalize="count"` averages w * loss over the assigned rows (VaT's code, identical to YOLOv5 at
  w = 1, and a uniform weight still scales the loss), `normalize="weight"` divides by the weight sum;
- a soft target only supervises objectness, target = its `conf`, weight = its weight, on the same
  assigned cells; where a hard and a soft target share a cell, the hard one wins;
- cells with no target have objectness weight `background_weight` (default 1; VaT passes the mean
  certain-target weight).
Where two targets share a cell, the later assignment wins (targets in input order, per offset group),
which is what YOLOv5's index assignment does on CPU; here it is resolved explicitly, so deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import DetectionTargets


@dataclass(frozen=True)
class YOLOv5LossConfig:
    """Loss hyper-parameters, used as given (no hidden rescaling).

    The defaults are the gains stored in the COCO yolov5n checkpoint (trained at 640 px, nc=80,
    3 levels). YOLOv5's train.py rescales the base gains before training; use `train_scaled` to
    reproduce that for another class count, level count or image size.
    """

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    balance: tuple[float, ...] = (4.0, 1.0, 0.4)
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    label_smoothing: float = 0.0
    normalize: Literal["count", "weight"] = "count"

    @classmethod
    def train_scaled(cls, nc: int, nl: int = 3, imgsz: int = 640, box: float = 0.05, obj: float = 1.0,
                     cls_gain: float = 0.5, **kwargs: object) -> YOLOv5LossConfig:
        """YOLOv5 train.py scaling: box *= 3/nl, cls *= nc/80 * 3/nl, obj *= (imgsz/640)^2 * 3/nl."""
        return cls(box=box * 3 / nl, cls=cls_gain * nc / 80 * 3 / nl, obj=obj * (imgsz / 640) ** 2 * 3 / nl,
                   **kwargs)  # type: ignore[arg-type]

    def updated(self, **overrides: object) -> YOLOv5LossConfig:
        known = set(self.__dataclass_fields__)
        bad = sorted(set(overrides) - known)
        if bad:
            raise KeyError(f"unknown YOLOv5 loss option(s) {', '.join(bad)}; accepted: {', '.join(sorted(known))}")
        if "balance" in overrides:
            overrides["balance"] = tuple(float(b) for b in overrides["balance"])  # type: ignore[union-attr]
        cfg = replace(self, **overrides)  # type: ignore[arg-type]
        if cfg.normalize not in ("count", "weight"):
            raise ValueError(f"normalize must be 'count' or 'weight', got {cfg.normalize!r}")
        return cfg


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7, detach_alpha: bool = True) -> Tensor:
    """Complete IoU of paired cx,cy,w,h boxes [N, 4] -> [N].

    CIoU = IoU - rho^2 / c^2 - alpha * v, v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2,
    alpha = v / (v - IoU + 1 + eps); YOLOv5 treats alpha as a constant (`detach_alpha`).
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    h1, h2 = h1 + eps, h2 + eps
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = ((torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(min=0)
             * (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(min=0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    if detach_alpha:
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
    else:
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class Matches(NamedTuple):
    """Targets assigned to cells of one level: image, anchor, row, column, box in cell units, row id."""

    b: Tensor
    a: Tensor
    gj: Tensor
    gi: Tensor
    tbox: Tensor  # [n, 4] x, y offset from the cell corner, w, h in grid units
    cls: Tensor
    tid: Tensor  # index into DetectionTargets


_OFFSETS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def assign_targets(rows: Tensor, anchors: Tensor, shapes: Sequence[tuple[int, int]], anchor_t: float,
                   g: float = 0.5) -> list[Matches]:
    """YOLOv5 assignment. rows: [nt, 7] = image, class, cx, cy, w, h (normalised), target id.

    anchors: [nl, na, 2] in grid units. The order of the returned rows (offset group, anchor,
    target) fixes which target wins a shared cell.
    """
    nl, na = anchors.shape[:2]
    nt = rows.shape[0]
    dev = rows.device
    ai = torch.arange(na, device=dev, dtype=rows.dtype).view(na, 1, 1).expand(na, nt, 1)
    t_all = torch.cat((rows[None].expand(na, nt, 7), ai), dim=2)  # [na, nt, 8]
    off = _OFFSETS.to(dev, rows.dtype) * g
    out = []
    for i, (ny, nx) in enumerate(shapes):
        gain = torch.tensor([1, 1, nx, ny, nx, ny, 1, 1], device=dev, dtype=rows.dtype)
        t = t_all * gain
        anc = anchors[i].to(rows)
        if nt:
            r = t[..., 4:6] / anc[:, None]
            t = t[torch.max(r, 1 / r).max(2).values < anchor_t]
            gxy = t[:, 2:4]
            gxi = gain[[2, 3]] - gxy
            lo = (gxy % 1 < g) & (gxy > 1)
            hi = (gxi % 1 < g) & (gxi > 1)
            sel = torch.stack((torch.ones_like(lo[:, 0]), lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]))
            t = t[None].expand(5, -1, -1)[sel]
            offsets = off[:, None].expand(5, sel.shape[1], 2)[sel]
        else:
            t = t_all[0]
            offsets = torch.zeros(0, 2, device=dev, dtype=rows.dtype)
        gxy = t[:, 2:4]
        gij = (gxy - offsets).long()
        gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
        tbox = torch.cat((gxy - torch.stack((gi, gj), 1).to(gxy), t[:, 4:6]), 1)
        out.append(Matches(t[:, 0].long(), t[:, 7].long(), gj, gi, tbox, t[:, 1].long(), t[:, 6].long()))
    return out


def _last_wins(flat: Tensor) -> Tensor:
    """Mask keeping, for each repeated cell index, only its last occurrence."""
    if flat.numel() == 0:
        return torch.ones(0, dtype=torch.bool, device=flat.device)
    order = torch.arange(flat.numel(), device=flat.device)
    winner = torch.full((int(flat.max()) + 1,), -1, dtype=torch.long, device=flat.device)
    winner.scatter_reduce_(0, flat, order, reduce="amax")
    return winner[flat] == order


class YOLOv5Loss:
    """Callable loss bound to a detector's anchors (grid units) and class count."""

    def __init__(self, anchors: Tensor, nc: int, config: YOLOv5LossConfig | None = None) -> None:
        self.anchors = anchors.detach().float()
        self.nl, self.na = self.anchors.shape[:2]
        self.nc = nc
        self.cfg = config or YOLOv5LossConfig()
        if len(self.cfg.balance) != self.nl:
            raise ValueError(f"loss balance {self.cfg.balance} needs one entry per level ({self.nl})")

    def _reduce(self, per: Tensor, w: Tensor) -> Tensor:
        if self.cfg.normalize == "weight":
            return (per * w).sum() / w.sum().clamp_min(1e-12)
        return (per * w).mean()

    def _background(self, background_weight: float | Sequence[float] | Tensor | None) -> list[float]:
        if background_weight is None:
            return [1.0] * self.nl
        if isinstance(background_weight, Tensor):
            background_weight = background_weight.detach().flatten().tolist()
        vals = [float(background_weight)] * self.nl if isinstance(background_weight, (int, float)) \
            else [float(v) for v in background_weight]
        if len(vals) == 1:
            vals = vals * self.nl
        if len(vals) != self.nl or not all(math.isfinite(v) and v >= 0 for v in vals):
            raise ValueError(f"background_weight must be a finite number >= 0 or one per level ({self.nl}); "
                             f"got {background_weight}")
        return vals

    def __call__(self, raw: Sequence[Tensor], targets: DetectionTargets,
                 background_weight: float | Sequence[float] | Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if len(raw) != self.nl:
            raise ValueError(f"expected {self.nl} raw levels, got {len(raw)}")
        # Half precision (autocast) is lifted to float32; float64 stays float64 (gradcheck).
        raw = [p.float() if p.dtype in (torch.float16, torch.bfloat16) else p for p in raw]
        for p in raw:
            if p.ndim != 5 or p.shape[1] != self.na or p.shape[-1] != self.nc + 5:
                raise ValueError(f"raw level shape {tuple(p.shape)} is not (bs, {self.na}, ny, nx, {self.nc + 5})")
        dev, bs = raw[0].device, raw[0].shape[0]
        cfg = self.cfg
        tg = targets.to(dev)
        if len(tg):
            if int(tg.batch_index.min()) < 0 or int(tg.batch_index.max()) >= bs:
                raise ValueError(f"DetectionTargets.batch_index must lie in [0, {bs}), got "
                                 f"[{int(tg.batch_index.min())}, {int(tg.batch_index.max())}]")
            hard_labels = tg.labels[~tg.soft]
            if hard_labels.numel() and (int(hard_labels.min()) < 0 or int(hard_labels.max()) >= self.nc):
                raise ValueError(f"DetectionTargets.labels must lie in [0, {self.nc}) for hard targets")
        dt = raw[0].dtype
        weights, conf = tg.weights.to(dt), tg.conf.to(dt)
        rows = torch.cat((tg.batch_index[:, None].float(), tg.labels[:, None].float(), tg.boxes.float(),
                          torch.arange(len(tg), device=dev, dtype=torch.float32)[:, None]), 1)
        shapes = [(int(p.shape[2]), int(p.shape[3])) for p in raw]
        anchors = self.anchors.to(dev)
        hard = assign_targets(rows[~tg.soft], anchors, shapes, cfg.anchor_t)
        soft = assign_targets(rows[tg.soft], anchors, shapes, cfg.anchor_t)
        bg = self._background(None if background_weight is None else background_weight)
        cp, cn = 1.0 - 0.5 * cfg.label_smoothing, 0.5 * cfg.label_smoothing
        pos_cls = torch.tensor([cfg.cls_pw], device=dev, dtype=raw[0].dtype)
        pos_obj = torch.tensor([cfg.obj_pw], device=dev, dtype=raw[0].dtype)
        zero = raw[0].sum() * 0
        lbox, lobj, lcls = zero, zero, zero
        for i, p in enumerate(raw):
            h, s = hard[i], soft[i]
            obj_val = [conf[s.tid]]
            if len(h.b):
                ps = p[h.b, h.a, h.gj, h.gi]
                w = weights[h.tid]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i][h.a]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), h.tbox)
                lbox = lbox + self._reduce(1.0 - iou, w)
                obj_val.append(iou.detach().clamp(min=0))
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], cn)
                    t[torch.arange(len(h.b), device=dev), h.cls] = cp
                    per = F.binary_cross_entropy_with_logits(ps[:, 5:], t, pos_weight=pos_cls, reduction="none")
                    lcls = lcls + self._reduce(per.mean(1), w)
            # Soft rows first, hard rows last: a hard target overrides a soft one in the same cell.
            b, a, gj, gi = (torch.cat((getattr(s, k), getattr(h, k))) for k in ("b", "a", "gj", "gi"))
            vals = torch.cat(obj_val)
            wts = torch.cat((weights[s.tid], weights[h.tid]))
            ny, nx = shapes[i]
            keep = _last_wins(((b * self.na + a) * ny + gj) * nx + gi)
            tobj = torch.zeros(p.shape[:4], device=dev, dtype=dt)
            wobj = torch.full(p.shape[:4], bg[i], device=dev, dtype=dt)
            idx = (b[keep], a[keep], gj[keep], gi[keep])
            tobj[idx] = vals[keep]
            wobj[idx] = wts[keep]
            per_obj = F.binary_cross_entropy_with_logits(p[..., 4], tobj, pos_weight=pos_obj, reduction="none")
            lobj = lobj + (per_obj * wobj).mean() * cfg.balance[i]
        lbox, lobj, lcls = lbox * cfg.box, lobj * cfg.obj, lcls * cfg.cls
        total = (lbox + lobj + lcls) * bs
        return total, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
