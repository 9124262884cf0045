"""Native YOLOv5 (public v6 architecture, own implementation): model, decode, loss, task adapter."""

from .decode import decode
from .loss import YOLOv5Loss, YOLOv5LossConfig, bbox_ciou
from .model import YOLOv5Model, build_yolov5
from .task import YOLOv5Task

__all__ = ["YOLOv5Loss", "YOLOv5LossConfig", "YOLOv5Model", "YOLOv5Task", "bbox_ciou", "build_yolov5", "decode"]
