"""Evaluation harness: labelled data -> (degradation) -> image stages -> frozen task -> metrics.

`evaluate_detection(task, dataset, pipeline, ...)` and `evaluate_classification(task, dataset, pipeline, ...)`
are what the training engine and `taskbridge evaluate` call; `pipeline` holds the image stages
(`taskbridge.inference.Pipeline`: restorer, trained translator) applied to each degraded image.
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
from taskbridge.evaluation.detection import DetectionProtocol, evaluate_detection
from taskbridge.evaluation.quality import evaluate_quality

__all__ = [
    "ClassMap", "ClassificationArrays", "DetectionFolder", "DetectionProtocol", "DetectionSample",
    "evaluate_classification", "evaluate_detection", "evaluate_quality", "load_cifar_npz", "open_dataset",
]
