"""torchvision detector adapter with random weights: shapes, loss, gradient to the input, BN frozen."""

from __future__ import annotations

import pytest
import torch

from taskbridge.registry import TASKS
from taskbridge.tasks.base import DetectionTargets

SMALL = {"min_size": 96, "max_size": 128}


def targets() -> DetectionTargets:
    return DetectionTargets(
        batch_index=torch.tensor([0, 0, 1]), labels=torch.tensor([1, 3, 3]),
        boxes=torch.tensor([[0.3, 0.4, 0.3, 0.4], [0.7, 0.6, 0.2, 0.3], [0.5, 0.5, 0.5, 0.5]]),
    )


@pytest.mark.parametrize(("arch", "kwargs"), [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", SMALL),
    ("retinanet", SMALL),
    ("fcos", SMALL),
    ("ssdlite", {}),
])
def test_torchvision_detector_contract(arch: str, kwargs: dict) -> None:
    task = TASKS.create("torchvision-detector", arch=arch, num_classes=5, class_names=list("abcde"), **kwargs)
    x = torch.rand(2, 3, 96, 128)
    dets = task.predict(x, conf_thres=0.0, iou_thres=0.5, max_det=7)
    assert len(dets) == 2 and all(d.boxes.shape[1] == 4 and len(d) <= 7 for d in dets)
    assert all(d.labels.max() < 5 for d in dets if len(d))
    bn = [m for m in task.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    stats = [m.running_mean.clone() for m in bn if m.running_mean is not None]
    x.requires_grad_(True)
    total, parts = task.loss(task.raw(x), targets())
    assert total.ndim == 0 and torch.isfinite(total) and parts
    total.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.parameters())
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, [m for m in bn if m.running_mean is not None],
                                                              strict=True))
    assert not task.training and not task.model.training


def test_per_image_weights_scale_the_loss() -> None:
    torch.manual_seed(0)
    task = TASKS.create("torchvision-detector", arch="ssdlite", num_classes=5)  # SSD: deterministic loss
    x = torch.rand(2, 3, 96, 128)
    t = targets()
    base, _ = task.loss(task.raw(x), t)
    t2 = DetectionTargets(t.batch_index, t.labels, t.boxes, weights=torch.full((3,), 0.5))
    half, _ = task.loss(task.raw(x), t2)
    assert half.item() == pytest.approx(0.5 * base.item(), rel=1e-4)
    t3 = DetectionTargets(t.batch_index, t.labels, t.boxes, weights=torch.tensor([1.0, 1.0, 0.0]))
    mixed, _ = task.loss(task.raw(x), t3)  # image 1 has only a zero-weight target -> background image
    assert torch.isfinite(mixed)


def test_unknown_arch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        TASKS.create("torchvision-detector", arch="yolo9000")
