"""The frozen YOLOv5n backbone as a feature network: content and style measured in the detector's own
features (task-aware losses for translators such as Hierarchy Flow), offline with the shipped weights."""

from __future__ import annotations

from taskbridge.features.vgg import FeatureNet
from taskbridge.registry import FEATURES

#: backbone layer index of each pyramid level's last block (YOLOv5 v6: Conv/C3 pairs, then SPPF)
LEVELS = {"p1": 0, "p2": 2, "p3": 4, "p4": 6, "p5": 9}


@FEATURES.register("yolov5n-backbone")
def yolov5n_backbone(weights: str = "yolov5n-coco", last: str = "p5") -> FeatureNet:
    """YOLOv5n's backbone (layers 0-9, COCO weights) with taps p1 (stride 2) ... p5 (stride 32); input [0, 1]."""
    from taskbridge.tasks.yolov5.model import build_yolov5
    from taskbridge.tasks.yolov5.official_checkpoint import load_yolov5_state

    if last not in LEVELS:
        raise ValueError(f"no level '{last}' in the YOLOv5 backbone; known: {', '.join(LEVELS)}")
    model, _ = build_yolov5(load_yolov5_state(weights))
    keep = model.model[: LEVELS[last] + 1]
    if any(getattr(m, "f", -1) != -1 for m in keep):
        raise ValueError(f"YOLOv5 weights '{weights}': the backbone is not a plain chain up to layer {LEVELS[last]}")
    taps = {name: i for name, i in LEVELS.items() if i <= LEVELS[last]}
    return FeatureNet(keep, taps, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "yolov5n-backbone")
