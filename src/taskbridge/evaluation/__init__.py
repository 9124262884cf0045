"""Evaluation harness: labelled data -> (degradation) -> restorer -> translator -> frozen task -> metrics.

`evaluate_detection(task, dataset, pipeline, ...)` and `evaluate_classification(task, dataset, pipeline, ...)`
are what the training engine and `taskbridge evaluate` call; `pipeline` maps a degraded image batch
[B, 3, H, W] to the task input (see `build_pipeline`).
"""

from taskbridge.evaluation.class_map import ClassMap
from taskbridge.evaluation.classification import evaluate_classification
from taskbridge.evaluation.datasets import (
    ClassificationArrays,
    DetectionFolder,
    DetectionSample,
    load_cifar_npz,
    open_dataset,
)
from taskbridge.evaluation.detection import evaluate_detection
from taskbridge.evaluation.letterbox import LetterboxInfo, letterbox
from taskbridge.evaluation.pipeline import ImagePipeline, build_pipeline
from taskbridge.evaluation.quality import evaluate_quality

__all__ = [
    "ClassMap", "ClassificationArrays", "DetectionFolder", "DetectionSample", "ImagePipeline", "LetterboxInfo",
    "build_pipeline", "evaluate_classification", "evaluate_detection", "evaluate_quality", "letterbox", "load_cifar_npz", "open_dataset",
]
