"""The image stages of an evaluation: each runs once, in order, on the photo at its native resolution.

A stage maps [B, 3, H, W] in [0, 1] to an image of the same size: `RestorerStage` (a frozen
restorer) or an `InferenceModel` (a trained run, with whatever restorer it owns). What happens
after the stages (8-bit quantisation, letterbox, the task model) is the evaluation protocol's
business (`taskbridge.evaluation`), not the pipeline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class RestorerStage(nn.Module):
    """A frozen restorer as a stage (output clamped to [0, 1])."""

    def __init__(self, restorer: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.restorer = restorer
        self.name = name or getattr(restorer, "name", None) or type(restorer).__name__

    def describe(self) -> dict[str, Any]:
        return {"stage": "restorer", "restorer": self.name}

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        from taskbridge.inference.tiling import tiled

        return torch.cat([tiled(self.restorer, x[None]) for x in images]).clamp(0, 1)


class Pipeline(nn.Module):
    """Stages in order; `describe()` is what result files record."""

    def __init__(self, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = nn.ModuleList(stages)

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.stages]

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        for stage in self.stages:
            images = stage(images)
        return images
