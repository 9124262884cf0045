"""`yolov5n` task: the native YOLOv5 as a frozen, differentiable `DetectionTask`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...data.transforms import letterbox, scale_boxes
from ...registry import TASKS
from ..base import Detections, DetectionTargets, DetectionTask
from ..nms import non_max_suppression
from .decode import decode
from .fast import FusedYOLOv5
from .loss import YOLOv5Loss, YOLOv5LossConfig
from .model import build_yolov5
from .official_checkpoint import load_yolov5_state


class YOLOv5Task(DetectionTask):
    """Frozen YOLOv5 (native implementation); BN always uses its running statistics.

    Conv and BN stay unfused, so `raw()` is the same function in train and eval mode and gradients
    reach the input image through frozen weights. `predict()` instead runs a folded inference copy
    (`fast_model()`), built lazily per (device, dtype) and kept outside the module tree.
    """

    def __init__(self, weights: str | os.PathLike[str] = "yolov5n-coco",
                 hyp: dict[str, Any] | None = None) -> None:
        super().__init__()
        # A plain dict attribute: not a submodule, so the fused copy stays out of state_dict()/parameters().
        self._fast: dict[tuple[torch.device, torch.dtype], FusedYOLOv5] = {}
        # An official yolov5*.pt goes through the restricted reader (no YOLOv5 code, nothing run).
        state = load_yolov5_state(weights)
        if not isinstance(state, dict):
            raise TypeError(f"YOLOv5 weights '{weights}' must be a dict with state_dict/yaml/names, "
                            f"got {type(state).__name__}")
        self.model, self.class_names = build_yolov5(state)
        det = self.model.detect
        self.nc = det.nc
        self.stride = int(det.stride.max())
        self.loss_config = YOLOv5LossConfig().updated(**(hyp or {}))
        self.freeze()

    def _apply(self, fn: Any, recurse: bool = True) -> YOLOv5Task:
        """`.to()`, `.double()`, `.cuda()`... replace the weights: the fused copy is rebuilt on next use."""
        self._fast.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        """New weights (also when loaded through a parent module) make the fused copy stale."""
        self._fast.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def fast_model(self) -> FusedYOLOv5:
        """Conv+BN-folded inference copy of `self.model` in its current device and dtype.

        Cached; rebuilt after `.to()`/dtype moves and `load_state_dict()`. In-place edits of the
        (frozen) weights are not seen by a copy already built.
        """
        w = self.model.detect.m[0].weight
        key = (w.device, w.dtype)
        if key not in self._fast:
            self._fast.clear()
            self._fast[key] = FusedYOLOv5(self.model)
        return self._fast[key]

    @property
    def strides(self) -> Tensor:
        return self.model.detect.stride

    @property
    def anchors(self) -> Tensor:
        """[nl, na, 2] in grid units."""
        return self.model.detect.anchors

    def _check(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"YOLOv5 expects NCHW RGB images, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image size {h}x{w} is not a multiple of {self.stride}; letterbox first "
                             f"(taskbridge.data.transforms.letterbox, auto=True) or use predict_images()")

    def raw(self, images: Tensor) -> list[Tensor]:
        """Per-level raw head outputs (bs, na, ny, nx, 5 + nc), differentiable w.r.t. `images`."""
        self._check(images)
        return self.model(images)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """The neck's P3-P5 feature maps (what the head reads), differentiable w.r.t. `images`."""
        self._check(images)
        return self.model.head_inputs(images)

    def candidates(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(decoded [bs, N, 5 + nc], raw [bs, N, 5 + nc]): what union NMS concatenates across views."""
        return decode(self.raw(images), self.anchors, self.strides)

    def predict(self, images: Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = False, return_features: bool = False) -> list[Detections]:
        """Detections from the fused inference copy (equal to `candidates()` + NMS within float rounding)."""
        self._check(images)
        with torch.no_grad():
            pred, raw = self.fast_model()(images, return_raw=return_features)
        return non_max_suppression(pred, raw, conf_thres, iou_thres, max_det, multi_label)

    def loss(self, raw: Sequence[Tensor], targets: DetectionTargets,
             background_weight: float | Sequence[float] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """YOLOv5 loss with target weights / soft targets; see `yolov5.loss` for the exact semantics."""
        return YOLOv5Loss(self.anchors, self.nc, self.loss_config)(raw, targets, background_weight)

    def predict_images(self, images: Sequence[Tensor], size: int = 640, conf_thres: float = 0.25,
                       iou_thres: float = 0.45, max_det: int = 1000, multi_label: bool = False,
                       return_features: bool = False) -> list[Detections]:
        """Detect on CHW images of any size (YOLOv5 detect.py style letterbox, auto padding to the
        stride); boxes come back in each original image's pixels."""
        out = []
        for img in images:
            if img.ndim != 3:
                raise ValueError(f"predict_images expects CHW tensors, got shape {tuple(img.shape)}")
            boxed, meta = letterbox(img, size, stride=self.stride, auto=True)
            det = self.predict(boxed[None], conf_thres, iou_thres, max_det, multi_label, return_features)[0]
            det.boxes = scale_boxes(det.boxes, tuple(boxed.shape[-2:]), meta.orig_size)
            out.append(det)
        return out


@TASKS.register("yolov5n")
def yolov5n(weights: str = "yolov5n-coco", hyp: dict[str, Any] | None = None) -> YOLOv5Task:
    """YOLOv5n (COCO-80), native implementation of the public v6 architecture; frozen."""
    return YOLOv5Task(weights, hyp)
