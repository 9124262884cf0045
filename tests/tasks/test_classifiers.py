"""CIFAR ResNet with the real weights, the timm/torchvision adapter, and CLIP zero-shot (tiny random config)."""

from __future__ import annotations

import pytest
import torch

from taskbridge.registry import TASKS
from taskbridge.tasks.base import ClassificationTargets


def check_frozen_and_differentiable(task, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    bn = [m for m in task.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    task.train()
    logits = task.raw(x)
    loss, parts = task.loss(logits, ClassificationTargets(torch.zeros(x.shape[0], dtype=torch.long)))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None and not p.requires_grad for p in task.parameters())
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bn, strict=True))
    assert not task.training and "cls" in parts


@pytest.mark.parametrize(("name", "n", "expected", "tol"), [
    ("cifar-resnet20", 1017, 0.916, 0.005),  # README: 91.6 % on all 1,017 images
    ("cifar-resnet56", 200, 0.927, 0.04),  # a slice keeps the suite fast; full set gives 92.7 %
])
def test_cifar_resnet_real_weights_accuracy(shared_data, name: str, n: int, expected: float, tol: float) -> None:
    from taskbridge.evaluation import load_cifar_npz

    ds = load_cifar_npz(shared_data / "cifar10_test_subset" / "cifar10_test_first1017.npz")
    task = TASKS.create(name)
    with torch.no_grad():
        acc = float((task.predict(ds.images[:n]).argmax(1) == ds.labels[:n]).float().mean())
    assert acc == pytest.approx(expected, abs=tol)
    check_frozen_and_differentiable(task, ds.images[:4])


def test_cifar_resnet_feature_maps_are_its_stages() -> None:
    task = TASKS.create("cifar-resnet20")
    x = torch.rand(2, 3, 32, 32)
    feats = task.feature_maps(x)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    pooled = torch.nn.functional.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
    assert torch.allclose(task.net.linear(pooled), task.raw(x), atol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        task.feature_maps(torch.rand(2, 1, 32, 32))


def test_cifar_resnet_rejects_bad_input_and_weights(tmp_path) -> None:
    task = TASKS.create("cifar-resnet20", pretrained=False)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        task.raw(torch.rand(3, 32, 32))
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(RuntimeError):
        TASKS.create("cifar-resnet56", weights=str(bad))


def test_torchvision_classifier_adapter() -> None:
    task = TASKS.create("classifier", name="resnet18", num_classes=10, input_size=64)
    assert len(task.class_names) == 10 and task.source == "torchvision"
    x = torch.rand(2, 3, 40, 48)
    assert task.predict(x).shape == (2, 10)
    check_frozen_and_differentiable(task, x)
    with pytest.raises(ValueError, match="class_names"):
        TASKS.create("classifier", name="resnet18", num_classes=10, class_names=["a"])


def test_timm_classifier_adapter() -> None:
    pytest.importorskip("timm", reason="timm not installed (optional extra 'timm')")
    task = TASKS.create("classifier", name="resnet10t", source="timm", num_classes=5, input_size=32)
    assert task.source == "timm" and task.raw(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_clip_zero_shot_tiny_random(tiny_clip_cfg: dict) -> None:
    pytest.importorskip("open_clip", reason="open_clip not installed (optional extra 'clip')")
    task = TASKS.create("clip-zero-shot", class_names=["cat", "dog", "car"], model_cfg=tiny_clip_cfg)
    p = task.predict(torch.rand(2, 3, 48, 40))
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2))
    assert task.text_embeddings.shape == (3, 16)
    check_frozen_and_differentiable(task, torch.rand(2, 3, 32, 32))


ULTRALYTICS_CHECK = """
import torch
from taskbridge.registry import TASKS
from taskbridge.tasks.base import DetectionTargets

task = TASKS.create("ultralytics", weights="yolov8n.yaml")  # random weights, no download
x = torch.rand(2, 3, 64, 96)
dets = task.predict(x, conf_thres=0.0, max_det=5)
assert len(dets) == 2 and all(len(d) <= 5 and d.boxes.shape[1] == 4 for d in dets)
x.requires_grad_(True)
tg = DetectionTargets(torch.tensor([0, 1]), torch.tensor([0, 2]),
                      torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.4, 0.4, 0.2, 0.5]]))
total, parts = task.loss(task.raw(x), tg)
total.backward()
assert torch.isfinite(total) and set(parts) == {"box", "cls", "dfl"}
assert x.grad is not None and x.grad.abs().sum() > 0 and not task.model.training
print("ULTRALYTICS-OK")
"""


def test_ultralytics_adapter_or_clear_error(tmp_path) -> None:
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("ultralytics") is None:
        with pytest.raises(ImportError, match="pip install ultralytics"):
            TASKS.create("ultralytics", weights="yolov8n.yaml")
        return
    # ultralytics patches PIL and other globals on import and may try to pip-install things:
    # run it in its own offline process so it cannot change the rest of the suite.
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", ULTRALYTICS_CHECK], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "ULTRALYTICS-OK" in proc.stdout, proc.stderr[-3000:]
