"""SCI (Ma et al., CVPR 2022), inference part: our implementation loading the official weights.

SCI estimates an illumination map u = clamp(x + f(x), 1e-4, 1) and returns the Retinex
reflectance x / u. The checkpoint also holds the self-calibration module (`calibrate.*`), used
only in training, which we ignore. A detail that matters: in SCI's code every entry of
`enhance.blocks` is *the same module object* as `enhance.conv`, so the checkpoint stores the one
shared conv+BN twice. We keep one copy, apply it once per block, and refuse a checkpoint whose
copies differ (that would not be SCI).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge import hub
from taskbridge.registry import RESTORERS
from taskbridge.restorers.base import FrozenRestorer, load_prefixed, unwrap_state

_BLOCK = re.compile(r"^enhance\.blocks\.(\d+)\.")


def _enhance_state(state: dict[str, Tensor], where: str) -> tuple[dict[str, Tensor], int]:
    """Map SCI keys onto ours; returns (state, number of block applications)."""
    blocks = sorted({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    if not blocks:
        raise RuntimeError(f"{where}: no 'enhance.blocks.*' keys; is this an SCI checkpoint?")
    shared = {k.removeprefix("enhance.blocks.0."): v for k, v in state.items() if k.startswith("enhance.blocks.0.")}
    for key in [k for k in state if k.startswith(("enhance.blocks.", "enhance.conv."))]:
        tail = key.removeprefix("enhance.conv.") if key.startswith("enhance.conv.") else key.split(".", 3)[3]
        if tail in shared and not torch.equal(state[key], shared[tail]):
            raise RuntimeError(f"{where}: '{key}' differs from the shared block; SCI shares one conv+BN")
    out = {f"block.{k}": v for k, v in shared.items()}
    for key, value in state.items():
        if key.startswith(("enhance.in_conv.", "enhance.out_conv.")):
            out[key.removeprefix("enhance.")] = value
    return out, len(blocks)


class SCI(FrozenRestorer):
    """SCI low-light enhancer (enhance branch, about 0.3 K parameters at inference)."""

    def __init__(self, weights: str | None, channels: int = 3, layers: int = 1) -> None:
        super().__init__()
        state: dict[str, Tensor] | None = None
        if weights is not None:
            where = f"SCI weights '{weights}'"
            state, layers = _enhance_state(unwrap_state(hub.load_state(weights), where), where)
            channels = state["in_conv.0.weight"].shape[0]
        self.layers = layers
        self.in_conv = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1))
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels))
        self.out_conv = nn.Sequential(nn.Conv2d(channels, 3, 3, 1, 1))
        if state is not None:
            load_prefixed(self, state, f"SCI weights '{weights}'")
        self.freeze()

    def illumination(self, images: Tensor) -> Tensor:
        """u = clamp(x + sigmoid(out(fea)), 1e-4, 1), fea refined by the shared block `layers` times."""
        fea = F.relu(self.in_conv(images))
        for _ in range(self.layers):
            fea = fea + F.relu(self.block(fea))
        return torch.clamp(torch.sigmoid(self.out_conv(fea)) + images, 1e-4, 1.0)

    def margin(self, h: int, w: int) -> int:
        return self.layers + 3  # 3x3 convolutions: in, the shared block `layers` times, out; + 1

    def forward(self, images: Tensor) -> Tensor:
        self.check_input(images)
        return torch.clamp(images / self.illumination(images), 0.0, 1.0)


def _factory(level: str) -> Callable[..., SCI]:
    def make(weights: str | None = f"sci-{level}") -> SCI:
        return SCI(weights)

    make.__doc__ = f"SCI low-light enhancer, '{level}' weights (official checkpoint)."
    make.__name__ = f"sci_{level}"
    return make


for _level in ("easy", "medium", "difficult"):
    RESTORERS.register(f"sci-{_level}")(_factory(_level))
