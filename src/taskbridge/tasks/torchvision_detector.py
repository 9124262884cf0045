"""torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD/SSDlite) behind the `DetectionTask` contract.

torchvision computes a detector's losses *inside* `forward` when the model is in training mode, so
`raw()` cannot return head tensors the way YOLO does. Here `raw(images)` returns a `TorchvisionRaw`
holding the (differentiable) input batch, and `loss(raw, targets)` runs the model's own
loss-producing path on it with every module in training mode **except normalisation and dropout
layers**, which stay in eval: BN statistics never update and gradients reach the input. Frozen
parameters get no gradient. Sampling inside the R-CNN heads (RPN/ROI positive-negative sampling) is
random, so the Faster R-CNN loss is stochastic, as in torchvision training.

Per-target weights: torchvision's losses are means over sampled anchors/proposals with no
per-box weight, so weights act **per image**: an image's loss is multiplied by the mean weight of
its targets (targets with weight <= 0 are dropped; an image without targets is a pure-background
image with weight `background_weight`, default 1). Soft (objectness-only) targets have no
torchvision equivalent and are dropped. Uniform weights take one batched forward; otherwise one
forward per image.

Weights come from the user: `weights=<state-dict file>` (loaded with `weights_only=True`), or
`pretrained=True` for torchvision's own COCO weights (downloaded by torchvision). With neither,
the model is randomly initialised (tests). Class indices are torchvision's (COCO: 91 slots, 0 is
background, `N/A` gaps), and `class_names` carries the matching names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.registry import TASKS
from taskbridge.tasks.base import Detections, DetectionTargets, DetectionTask

ARCHES = {
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "fasterrcnn-v2": "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn-mobilenet": "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet": "retinanet_resnet50_fpn",
    "retinanet-v2": "retinanet_resnet50_fpn_v2",
    "fcos": "fcos_resnet50_fpn",
    "ssdlite": "ssdlite320_mobilenet_v3_large",
    "ssd": "ssd300_vgg16",
}
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.Dropout)


@dataclass
class TorchvisionRaw:
    """Deferred forward: torchvision fuses the forward pass and the loss, so raw keeps the input."""

    images: Tensor


@contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Training-mode control flow (losses) with normalisation/dropout layers kept in eval."""
    model.train(True)
    for m in model.modules():
        if isinstance(m, _NORM):
            m.train(False)
    try:
        yield
    finally:
        model.train(False)


def coco91_names(arch: str) -> list[str]:
    import torchvision

    try:
        return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])
    except (ValueError, AttributeError, KeyError):
        return [f"class_{i}" for i in range(91)]


class TorchvisionDetector(DetectionTask):
    """A frozen torchvision detection model; predict() in eval mode, loss() through its training path."""

    stride = 32

    def __init__(self, arch: str = "fasterrcnn_resnet50_fpn", weights: str | None = None, pretrained: bool = False,
                 num_classes: int = 91, class_names: list[str] | None = None, **model_kwargs: Any) -> None:
        super().__init__()
        import torchvision

        arch = ARCHES.get(arch, arch)
        available = torchvision.models.list_models(module=torchvision.models.detection)
        if arch not in available:
            raise ValueError(f"unknown torchvision detector '{arch}'; available: {', '.join(sorted(available))}")
        if pretrained and weights:
            raise ValueError("give either weights=<file> or pretrained=True, not both")
        kw: dict[str, Any] = {"weights": "DEFAULT" if pretrained else None, "weights_backbone": None, **model_kwargs}
        if not pretrained:
            kw["num_classes"] = num_classes
        self.model = torchvision.models.get_model(arch, **kw)
        if weights:
            from taskbridge import hub

            state = hub.load_state(weights)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]
            try:
                self.model.load_state_dict(state)
            except RuntimeError as err:
                raise RuntimeError(f"{weights}: does not fit torchvision '{arch}' ({err})") from err
        n = num_classes if not pretrained else 91
        self.class_names = list(class_names) if class_names else (coco91_names(arch) if n == 91 else
                                                                  [f"class_{i}" for i in range(n)])
        if len(self.class_names) != n:
            raise ValueError(f"class_names has {len(self.class_names)} entries but the model has {n} classes")
        self.arch = arch
        self.freeze()

    @staticmethod
    def _check(images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")

    def _set_thresholds(self, conf: float, iou: float, max_det: int) -> None:
        for obj in (self.model, getattr(self.model, "roi_heads", None)):
            if obj is None:
                continue
            for attr, val in (("score_thresh", conf), ("nms_thresh", iou), ("detections_per_img", max_det)):
                if hasattr(obj, attr):
                    setattr(obj, attr, val)

    def predict(self, images: Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = False, return_features: bool = False) -> list[Detections]:
        """Eval-mode detections in input pixels. torchvision's NMS is per class, so `multi_label` has no
        effect; no per-box feature vector exists, so `features`/`objectness` are None."""
        self._check(images)
        self._set_thresholds(conf_thres, iou_thres, max_det)
        self.model.eval()
        out = self.model(list(images))
        return [Detections(o["boxes"], o["scores"], o["labels"].long(), None, None, o["scores"]) for o in out]

    def raw(self, images: Tensor) -> TorchvisionRaw:
        self._check(images)
        return TorchvisionRaw(images)

    def _targets(self, targets: DetectionTargets, b: int, h: int, w: int) -> list[dict[str, Tensor]]:
        out = []
        for i in range(b):
            m = (targets.batch_index == i) & (targets.weights > 0) & ~targets.soft
            cx, cy, bw, bh = (targets.boxes[m] * targets.boxes.new_tensor([w, h, w, h])).unbind(1)
            xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
            ok = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)  # torchvision rejects degenerate boxes
            out.append({"boxes": xyxy[ok].detach().float(), "labels": targets.labels[m][ok].long(),
                        "weight": targets.weights[m][ok]})
        return out

    def _forward_loss(self, images: Tensor, tg: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        with loss_mode(self.model):
            return self.model(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in tg])

    def loss(self, raw: TorchvisionRaw, targets: DetectionTargets,
             background_weight: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The model's own training loss (sum of its parts), weighted per image (see module docstring)."""
        images = raw.images
        b, _, h, w = images.shape
        tg = self._targets(targets.to(images.device), b, h, w)
        bg = 1.0 if background_weight is None else float(background_weight)
        img_w = [float(t["weight"].mean()) if len(t["weight"]) else bg for t in tg]
        if all(abs(x - img_w[0]) < 1e-12 for x in img_w):
            parts = self._forward_loss(images, tg)
            parts = {k: v * img_w[0] for k, v in parts.items()}
        else:
            parts = {}
            for i in range(b):
                for k, v in self._forward_loss(images[i: i + 1], tg[i: i + 1]).items():
                    parts[k] = parts.get(k, 0) + v * img_w[i] / b
        total = sum(parts.values())
        assert isinstance(total, Tensor)
        return total, {k.removeprefix("loss_"): v.detach() for k, v in parts.items()}


@TASKS.register("torchvision-detector")
def torchvision_detector(arch: str = "fasterrcnn_resnet50_fpn", weights: str | None = None, pretrained: bool = False,
                         num_classes: int = 91, class_names: list[str] | None = None,
                         **model_kwargs: Any) -> TorchvisionDetector:
    """Any torchvision detection model by name (fasterrcnn, retinanet, fcos, ssdlite, ...); weights from the user."""
    return TorchvisionDetector(arch, weights, pretrained, num_classes, class_names, **model_kwargs)
