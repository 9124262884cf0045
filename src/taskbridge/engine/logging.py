"""Run logging: `metrics.jsonl` always, TensorBoard scalars and image grids when it is installed.

Image grids come from `method.visuals(batch)`: each entry is a [B, C, H, W] batch in [0, 1]
(C = 1 for gate maps is fine). An entry `"<name>/boxes"` holding one [N, 4] xyxy tensor per
image (pixel coordinates of that image) draws those boxes on `<name>`. Grids are also written
as PNG under `<output_dir>/images/` so they can be looked at without TensorBoard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from taskbridge.data.io import save_image

BOX_COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500"]


def _scalar(v: Any) -> float | None:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            return None
        return float(v.detach().float().cpu())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def make_grid(visuals: dict[str, Any], max_images: int = 4) -> dict[str, Tensor]:
    """Per visual name, a 3xHxW grid (one row of up to `max_images` images, boxes drawn)."""
    from torchvision.utils import draw_bounding_boxes
    from torchvision.utils import make_grid as tv_grid

    out: dict[str, Tensor] = {}
    for name, batch in visuals.items():
        if name.endswith("/boxes") or not isinstance(batch, Tensor) or batch.ndim != 4:
            continue
        imgs = batch[:max_images].detach().float().cpu().clamp(0, 1)
        if imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1)
        elif imgs.shape[1] != 3:
            imgs = imgs[:, :3]
        boxes = visuals.get(f"{name}/boxes")
        if boxes is not None:
            drawn = []
            for i, img in enumerate(imgs):
                b = boxes[i] if i < len(boxes) else None
                u8 = (img * 255 + 0.5).to(torch.uint8)
                if b is not None and len(b):
                    b = torch.as_tensor(b).detach().float().cpu()[:, :4]
                    colours = [BOX_COLOURS[j % len(BOX_COLOURS)] for j in range(len(b))]
                    u8 = draw_bounding_boxes(u8, b, colors=colours, width=2)
                drawn.append(u8.float() / 255)
            imgs = torch.stack(drawn)
        out[name] = tv_grid(imgs, nrow=max_images, padding=2, pad_value=1.0)
    return out


class RunLogger:
    """Scalars to `metrics.jsonl` (+ TensorBoard under `tb/`), image grids to TensorBoard and PNG."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.output_dir / "metrics.jsonl").open("a", buffering=1)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.output_dir / "tb"))
            except ImportError:  # tensorboard is an optional extra
                self.writer = None

    def scalars(self, step: int, values: dict[str, Any], kind: str = "train") -> dict[str, float]:
        """Log every scalar-valued entry; returns the floats written (non-finite ones included)."""
        row = {k: f for k, v in values.items() if (f := _scalar(v)) is not None}
        record = {"step": int(step), "kind": kind, **{k: (v if math.isfinite(v) else str(v)) for k, v in row.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                tag = k if "/" in k else f"{kind}/{k}"
                self.writer.add_scalar(tag, v, step)
        return row

    def images(self, step: int, visuals: dict[str, Any], max_images: int = 4) -> list[Path]:
        grids = make_grid(visuals, max_images=max_images)
        paths = []
        for name, grid in grids.items():
            if self.writer is not None:
                self.writer.add_image(f"images/{name}", grid, step)
            safe = name.replace("/", "_")
            paths.append(save_image(grid, self.output_dir / "images" / f"step_{step:07d}_{safe}.png"))
        return paths

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        self._jsonl.flush()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self.writer is not None:
            self.writer.close()
