"""YOLOv5 model assembled from its architecture dict (the `yaml` of a checkpoint).

`parse` applies the depth/width multiples exactly as the public architecture defines them:
repeats n -> max(round(n * depth_multiple), 1) when n > 1, channels c -> ceil(c * width_multiple / 8) * 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import C3, SPPF, Bottleneck, Concat, Conv


class Detect(nn.Module):
    """Per-level 1x1 prediction convolutions; returns raw (bs, na, ny, nx, 5 + nc) tensors.

    `anchors` is stored in grid units (pixels / stride), like the checkpoint's `model.24.anchors`.
    """

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        out = []
        for conv, x in zip(self.m, xs, strict=True):
            y = conv(x)
            bs, _, ny, nx = y.shape
            out.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out


def run_graph(layers: nn.Sequential, save: Sequence[int], x: Tensor, head_inputs: bool = False) -> Any:
    """Run layers that carry `f` (input index or indices, -1 = previous) and `i`, keeping only saved outputs;
    `head_inputs` returns what the last layer would read instead of running it."""
    ys: list[Tensor | None] = []
    for n, m in enumerate(layers):
        f = m.f
        if f != -1:
            x = ys[f] if isinstance(f, int) else [x if j == -1 else ys[j] for j in f]  # type: ignore[assignment]
        if head_inputs and n == len(layers) - 1:
            return x
        x = m(x)
        ys.append(x if m.i in save else None)
    return x


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


_BLOCKS: dict[str, type[nn.Module]] = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "Bottleneck": Bottleneck}


def _resolve(arg: Any, cfg: dict[str, Any]) -> Any:
    """Architecture dicts name some arguments symbolically ('nc', 'anchors', 'None')."""
    if isinstance(arg, str):
        if arg == "None":
            return None
        if arg in cfg:
            return cfg[arg]
    return arg


class YOLOv5Model(nn.Module):
    """The YOLOv5 graph: `model` is a Sequential of layers, each with `f` (inputs) and `i` (index)."""

    def __init__(self, cfg: dict[str, Any], ch: int = 3) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        layers, self.save = self.parse(self.cfg, ch)
        self.model = nn.Sequential(*layers)
        det = self.detect
        # Strides follow from a dry run, as in the public model (8/16/32 for P3-P5).
        with torch.no_grad():
            s = 256
            outs = self._forward_features(torch.zeros(1, ch, s, s))
            det.stride.copy_(torch.tensor([s / o.shape[-2] for o in outs]))

    @property
    def detect(self) -> Detect:
        m = self.model[-1]
        assert isinstance(m, Detect)
        return m

    @staticmethod
    def parse(cfg: dict[str, Any], ch_in: int) -> tuple[list[nn.Module], list[int]]:
        try:
            nc, gd, gw = int(cfg["nc"]), float(cfg["depth_multiple"]), float(cfg["width_multiple"])
            spec = list(cfg["backbone"]) + list(cfg["head"])
        except KeyError as err:
            raise KeyError(f"YOLOv5 architecture dict lacks key {err}; expected nc, depth_multiple, "
                           f"width_multiple, anchors, backbone, head") from err
        no = nc + 5
        chs = [ch_in]
        layers: list[nn.Module] = []
        save: list[int] = []
        for i, (f, n, name, args) in enumerate(spec):
            args = [_resolve(a, cfg) for a in args]
            n = max(round(n * gd), 1) if n > 1 else n
            if name in _BLOCKS:
                c1, c2 = chs[f], args[0]
                if c2 != no:
                    c2 = make_divisible(c2 * gw, 8)
                args = [c1, c2, *args[1:]]
                if name == "C3":
                    args.insert(2, n)
                    n = 1
                block = _BLOCKS[name]
            elif name in ("nn.Upsample", "Upsample"):
                block, c2 = nn.Upsample, chs[f]
            elif name == "Concat":
                block, c2 = Concat, sum(chs[x] for x in f)
            elif name == "Detect":
                block = Detect
                args = [args[0], args[1], [chs[x] for x in f]]
                c2 = no
            else:
                raise ValueError(f"YOLOv5 architecture layer {i}: unsupported module '{name}'")
            module = nn.Sequential(*(block(*args) for _ in range(n))) if n > 1 else block(*args)
            module.f, module.i = f, i  # type: ignore[assignment]
            save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(module)
            if i == 0:
                chs = []
            chs.append(c2)
        return layers, sorted(set(save))

    def _forward_features(self, x: Tensor) -> list[Tensor]:
        return run_graph(self.model, self.save, x)

    def head_inputs(self, x: Tensor) -> list[Tensor]:
        """The neck's feature maps the Detect head reads (P3-P5), differentiable w.r.t. `x`."""
        return run_graph(self.model, self.save, x, head_inputs=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Raw per-level head outputs (bs, na, ny, nx, 5 + nc), pre-sigmoid."""
        return self._forward_features(x)


def build_yolov5(state: dict[str, Any]) -> tuple[YOLOv5Model, list[str]]:
    """Model + class names from a plain checkpoint dict {state_dict, yaml, names, stride}."""
    for key in ("state_dict", "yaml"):
        if key not in state:
            raise KeyError(f"YOLOv5 checkpoint lacks '{key}' (got keys {sorted(state)}); expected the plain "
                           f"re-saved format of yolov5n_state_dict.pt")
    model = YOLOv5Model(state["yaml"])
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    if "stride" in state:
        want = torch.as_tensor(state["stride"], dtype=torch.float32)
        if not torch.equal(want, model.detect.stride):
            raise ValueError(f"checkpoint strides {want.tolist()} differ from the architecture's "
                             f"{model.detect.stride.tolist()}")
    names = state.get("names", [str(i) for i in range(model.detect.nc)])
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return model, list(names)
