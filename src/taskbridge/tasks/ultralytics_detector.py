"""Optional adapter for ultralytics detection models (YOLOv8/11-style heads), if ultralytics is installed.

ultralytics is AGPL-3.0 and is never vendored or required: this module imports it only when a model
is created and raises a clear error otherwise. Tested with a randomly initialised
`yolov8n.yaml` model when ultralytics happens to be installed (ultralytics 8.4); design:
- `predict`: eval-mode forward -> [B, 4 + nc, A] (xywh pixels, class probabilities) -> our NMS
  (`torchvision.ops.batched_nms`, optional multi-label) -> `Detections`;
- `raw`: the training-mode head outputs with BN/dropout kept in eval (`loss_mode`), so gradients
  reach the input and statistics never update;
- `loss`: ultralytics' own criterion (`model.loss`), weighted per image like the torchvision
  adapter (per-image loss x mean target weight; zero-weight and soft targets dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from taskbridge.registry import TASKS
from taskbridge.tasks.base import Detections, DetectionTargets, DetectionTask
from taskbridge.tasks.torchvision_detector import loss_mode


def _ultralytics():
    try:
        import ultralytics  # noqa: F401
        from ultralytics import YOLO
    except ImportError as err:
        raise ImportError(
            "task 'ultralytics' needs the ultralytics package (AGPL-3.0), which taskbridge does not install: "
            "pip install ultralytics, or use yolov5n / torchvision-detector instead"
        ) from err
    return YOLO


class UltralyticsDetector(DetectionTask):
    """A frozen ultralytics DetectionModel loaded from the user's weights file (e.g. yolov8n.pt)."""

    def __init__(self, weights: str) -> None:
        """`weights`: a .pt checkpoint (a pickle: needs --trust-pickle), or a model yaml such as `yolov8n.yaml`
        (random weights, offline)."""
        super().__init__()
        if not str(weights).endswith((".yaml", ".yml")):  # ultralytics unpickles .pt files with weights_only=False
            from taskbridge.hub import require_pickle_trust

            require_pickle_trust(weights, "an ultralytics checkpoint")
        YOLO = _ultralytics()
        model = YOLO(weights).model
        args = getattr(model, "args", None)
        if isinstance(args, dict) or args is None:  # the criterion reads hyperparameters as attributes
            from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace

            model.args = IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **(args or {})})
        self.model = model.float()
        names = model.names
        self.class_names = [names[i] for i in range(len(names))] if isinstance(names, dict) else list(names)
        self.stride = int(max(model.stride.tolist())) if hasattr(model, "stride") else 32
        self.freeze()

    def predict(self, images: Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = False, return_features: bool = False) -> list[Detections]:
        from torchvision.ops import batched_nms

        self.model.eval()
        y = self.model(images)
        y = y[0] if isinstance(y, (tuple, list)) else y
        if isinstance(y, dict):
            raise RuntimeError("this ultralytics model returns a dict at inference (end-to-end head); unsupported")
        if y.shape[1] != 4 + len(self.class_names):
            raise RuntimeError(f"unsupported ultralytics head output {tuple(y.shape)} (expected [B, 4+nc, anchors])")
        out = []
        for p in y.transpose(1, 2):
            xy, wh, cls = p[:, :2], p[:, 2:4], p[:, 4:]
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
            if multi_label:
                i, j = (cls > conf_thres).nonzero(as_tuple=True)
                boxes, scores, labels = boxes[i], cls[i, j], j
            else:
                scores, labels = cls.max(1)
                keep = scores > conf_thres
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, iou_thres)[:max_det]
            out.append(Detections(boxes[keep], scores[keep], labels[keep].long(), None, None, scores[keep]))
        return out

    def raw(self, images: Tensor) -> Any:
        with loss_mode(self.model):
            return self.model(images)

    def loss(self, raw: Any, targets: DetectionTargets, background_weight: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        b = _batch_size(raw)
        keep = (targets.weights > 0) & ~targets.soft
        t = DetectionTargets(targets.batch_index[keep], targets.labels[keep], targets.boxes[keep], targets.weights[keep])
        bg = 1.0 if background_weight is None else float(background_weight)
        total: Tensor | float = 0.0
        names = ("box", "cls", "dfl")
        parts = {k: torch.zeros(()) for k in names}
        for i in range(b):  # per image: the criterion has no per-target weight
            m = t.batch_index == i
            w = float(t.weights[m].mean()) if m.any() else bg
            batch = {"batch_idx": torch.zeros(int(m.sum()), device=t.labels.device),
                     "cls": t.labels[m].float()[:, None], "bboxes": t.boxes[m]}
            loss, items = self.model.loss(batch, _slice(raw, i))
            total = total + loss.sum() * w / b
            items = items if isinstance(items, Tensor) else torch.stack(list(items.values()))
            for k, v in zip(names, items.detach().reshape(-1).cpu(), strict=False):
                parts[k] = parts[k] + v * w / b
        assert isinstance(total, Tensor)
        return total, parts


def _batch_size(raw: Any) -> int:
    """Batch size of the head output, which is a list of level tensors or (ultralytics >= 8.4) a dict."""
    first = next(iter(raw.values())) if isinstance(raw, dict) else raw[0]
    return int((first[0] if isinstance(first, (list, tuple)) else first).shape[0])


def _slice(raw: Any, i: int) -> Any:
    if isinstance(raw, dict):
        return {k: _slice(v, i) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return type(raw)(_slice(v, i) for v in raw)
    return raw[i: i + 1] if isinstance(raw, Tensor) else raw


@TASKS.register("ultralytics")
def ultralytics_detector(weights: str) -> UltralyticsDetector:
    """An ultralytics YOLO detector (optional; needs `pip install ultralytics`, AGPL-3.0)."""
    return UltralyticsDetector(weights)
