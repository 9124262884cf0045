"""The frozen task-model contract every detector and classifier adapter follows.

Inputs are NCHW float RGB in [0, 1]. Parameters are frozen and normalisation layers stay in
eval statistics whatever `train()` is called with, so `raw()` is differentiable with respect to
the *input* (what translators learn through) and identical in train and eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Detections:
    """Post-NMS detections of one image, in the pixel coordinates of the network input."""

    boxes: Tensor  # [N, 4] xyxy
    scores: Tensor  # [N] final confidence (obj * cls for YOLO)
    labels: Tensor  # [N] int64 model class index
    features: Tensor | None = None  # [N, F] raw pre-sigmoid head vector of the kept anchor (NUQ feature)
    objectness: Tensor | None = None  # [N] objectness probability (YOLO); None for anchor-free models
    class_prob: Tensor | None = None  # [N] probability of the kept class

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(device: torch.device | str = "cpu", feature_dim: int | None = None) -> Detections:
        z = torch.zeros(0, device=device)
        feats = torch.zeros(0, feature_dim, device=device) if feature_dim else None
        return Detections(torch.zeros(0, 4, device=device), z, z.long(), feats, z.clone(), z.clone())

    def select(self, keep: Tensor) -> Detections:
        def sel(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[keep]

        return Detections(
            self.boxes[keep], self.scores[keep], self.labels[keep],
            sel(self.features), sel(self.objectness), sel(self.class_prob),
        )


@dataclass
class DetectionTargets:
    """Training targets of a batch, one row per box; weights and soft targets are what VaT needs.

    `boxes` are cx, cy, w, h normalised by the input width/height. A *soft* target only
    supervises objectness with value `conf` (no box or class term); a hard target uses the
    usual box/objectness/class terms. Every term of a target is multiplied by its `weights`.
    """

    batch_index: Tensor  # [M] int64
    labels: Tensor  # [M] int64 model class index
    boxes: Tensor  # [M, 4] normalised cxcywh
    weights: Tensor = field(default=None)  # type: ignore[assignment]  # [M] float, default 1
    soft: Tensor = field(default=None)  # type: ignore[assignment]  # [M] bool, default False
    conf: Tensor = field(default=None)  # type: ignore[assignment]  # [M] float soft objectness, default 1

    def __post_init__(self) -> None:
        m, dev = self.labels.shape[0], self.labels.device
        if self.weights is None:
            self.weights = torch.ones(m, device=dev)
        if self.soft is None:
            self.soft = torch.zeros(m, dtype=torch.bool, device=dev)
        if self.conf is None:
            self.conf = torch.ones(m, device=dev)
        for name in ("batch_index", "weights", "soft", "conf"):
            if getattr(self, name).shape[0] != m:
                raise ValueError(f"DetectionTargets.{name} has {getattr(self, name).shape[0]} rows, expected {m}")
        if self.boxes.shape != (m, 4):
            raise ValueError(f"DetectionTargets.boxes must be [{m}, 4], got {tuple(self.boxes.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> DetectionTargets:
        return DetectionTargets(
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, 4, device=device),
        )

    @staticmethod
    def cat(parts: list[DetectionTargets]) -> DetectionTargets:
        parts = [p for p in parts if len(p)]
        if not parts:
            return DetectionTargets.empty()
        return DetectionTargets(*(torch.cat([getattr(p, n) for p in parts]) for n in
                                  ("batch_index", "labels", "boxes", "weights", "soft", "conf")))

    def to(self, device: torch.device | str) -> DetectionTargets:
        return DetectionTargets(*(getattr(self, n).to(device) for n in
                                  ("batch_index", "labels", "boxes", "weights", "soft", "conf")))


@dataclass
class ClassificationTargets:
    """Hard labels ([B] int64) or soft label distributions ([B, C]), each sample weighted."""

    labels: Tensor
    weights: Tensor | None = None

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = torch.ones(self.labels.shape[0], device=self.labels.device)


class FrozenTask(nn.Module):
    """Base of every task adapter: frozen parameters, normalisation always in eval mode."""

    kind: str = ""
    class_names: list[str]

    def freeze(self) -> FrozenTask:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenTask:  # noqa: D102 - see class docstring
        # Frozen means frozen: BN running statistics never update, dropout never fires.
        return super().train(False)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """Intermediate feature maps [B, C, H, W] (differentiable w.r.t. `images`), for losses on what the
        model sees rather than what it outputs; optional for a task."""
        raise NotImplementedError(f"{type(self).__name__} does not expose feature maps (feature_maps())")


class DetectionTask(FrozenTask):
    kind = "detection"
    stride: int = 32  # raw()/predict() inputs must have H, W divisible by this

    def predict(
        self,
        images: Tensor,
        conf_thres: float = 0.001,
        iou_thres: float = 0.6,
        max_det: int = 300,
        multi_label: bool = False,
        return_features: bool = False,
    ) -> list[Detections]:
        raise NotImplementedError

    def raw(self, images: Tensor) -> Any:
        raise NotImplementedError

    def loss(self, raw: Any, targets: DetectionTargets, background_weight: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted detection loss; returns (total, parts). Gradients flow to the input through `raw`."""
        raise NotImplementedError


class ClassificationTask(FrozenTask):
    kind = "classification"

    def predict(self, images: Tensor) -> Tensor:
        """Class probabilities [B, C]."""
        return self.raw(images).softmax(dim=1)

    def raw(self, images: Tensor) -> Tensor:
        """Logits [B, C]."""
        raise NotImplementedError

    def loss(self, raw: Tensor, targets: ClassificationTargets) -> tuple[Tensor, dict[str, Tensor]]:
        logp = raw.log_softmax(dim=1)
        if targets.labels.ndim == 2:
            per = -(targets.labels * logp).sum(dim=1)
        else:
            per = -logp.gather(1, targets.labels[:, None]).squeeze(1)
        assert targets.weights is not None
        total = (per * targets.weights).sum() / raw.shape[0] if raw.shape[0] else raw.sum() * 0
        return total, {"cls": total.detach()}
