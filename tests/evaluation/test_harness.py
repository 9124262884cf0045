"""Evaluation harness end to end with a small fake detector, real data loaders, pipeline and CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from taskbridge.evaluation import (
    ClassMap,
    DetectionFolder,
    DetectionSample,
    evaluate_classification,
    evaluate_detection,
    load_cifar_npz,
)
from taskbridge.evaluation.report import detection_grid, detection_table
from taskbridge.inference import InferenceModel, Pipeline, RestorerStage
from taskbridge.tasks.base import Detections, DetectionTask


class ColourBoxDetector(DetectionTask):
    """Detects the bounding box of saturated red ('car') and green ('person') pixels; nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.class_names = ["person", "truck", "car"]
        self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def predict(self, images: Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = False, return_features: bool = False) -> list[Detections]:
        assert images.shape[-1] % self.stride == 0 and images.shape[-2] % self.stride == 0
        out = []
        for img in images:
            boxes, labels = [], []
            for ch, label in ((0, 2), (1, 0)):
                others = [c for c in range(3) if c != ch]
                m = (img[ch] > 0.8) & (img[others].max(0).values < 0.2)
                if m.any():
                    ys, xs = m.nonzero(as_tuple=True)
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    labels.append(label)
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append(Detections(b, torch.full((len(b),), 0.9), torch.tensor(labels, dtype=torch.long)))
        return out


def make_samples() -> list[DetectionSample]:
    samples = []
    for i, (h, w) in enumerate([(120, 200), (150, 90), (100, 100)]):
        img = torch.full((3, h, w), 0.5)
        car = torch.tensor([10.0 + i, 20, 60 + i, 70])
        person = torch.tensor([w - 40.0, h - 50, w - 10.0, h - 5])
        img[:, 20:70, 10 + i: 60 + i] = torch.tensor([1.0, 0, 0])[:, None, None]
        img[:, h - 50: h - 5, w - 40: w - 10] = torch.tensor([0.0, 1, 0])[:, None, None]
        truck = torch.tensor([0.0, 0, 5, 5])  # labelled but not evaluated
        samples.append(DetectionSample(img, torch.stack([car, person, truck]), ["car", "person", "truck"],
                                       torch.zeros(3, dtype=torch.bool), f"img{i}"))
    return samples


def test_evaluate_detection_without_coco_backend_keeps_voc(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycocotools is optional: without it a run (e.g. validation during fit) warns and keeps VOC mAP50."""
    import taskbridge.evaluation.detection as det

    monkeypatch.setattr(det, "coco_backend", lambda: None)
    with pytest.warns(UserWarning, match="pycocotools"):
        res = det.evaluate_detection(ColourBoxDetector(), make_samples(), None, img_size=160,
                                     class_map=ClassMap(["person", "car"]), progress=False)
    assert res["map50"] == pytest.approx(1.0) and res["coco"] is None


class Brighten(torch.nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return (x * 2).clamp(0, 1)


class FakeMethod(torch.nn.Module):
    """A method as an inference model sees it: translate() and owned_restorer()."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def translate(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def owned_restorer(self) -> None:
        return None


def test_evaluate_detection_perfect_then_degraded_then_restored() -> None:
    task, samples = ColourBoxDetector(), make_samples()
    cmap = ClassMap(["person", "car"])
    res = evaluate_detection(task, samples, None, img_size=160, class_map=cmap, progress=False)
    assert res["num_images"] == 3
    assert res["voc"]["per_class"]["car"]["ap"] == pytest.approx(1.0)
    assert res["voc"]["per_class"]["person"]["num_gt"] == 3  # truck boxes not evaluated
    assert res["map50"] == pytest.approx(1.0) and res["coco"]["map50"] == pytest.approx(1.0)
    assert res["settings"]["conf_thres"] == 0.001 and res["settings"]["class_map"]["classes"] == ["person", "car"]

    def darken(x: Tensor) -> Tensor:
        return x * 0.5

    dark = evaluate_detection(task, samples, None, img_size=160, class_map=cmap, progress=False, degrade=darken)
    assert dark["map50"] == 0.0
    brighten = Pipeline([RestorerStage(torch.nn.Identity()), RestorerStage(Brighten())])
    fixed = evaluate_detection(task, samples, brighten, img_size=160, class_map=cmap, progress=False, degrade=darken)
    assert fixed["map50"] == pytest.approx(1.0)
    table = detection_table({"dark": dark, "fixed": fixed})
    assert "person" in table and "1.000" in table
    spread = evaluate_detection(task, samples, None, img_size=160, class_map=cmap, progress=False, bootstrap=50)
    assert spread["bootstrap"]["map50"]["resamples"] == 50 and spread["bootstrap"]["map50"]["ci95"] == [1.0, 1.0]
    assert "bootstrap" not in res  # only on request


def test_class_map_rejects_unmapped_model_class() -> None:
    with pytest.raises(ValueError, match="bus"):
        ClassMap(["person", "bus"]).model_lookup(["person", "car"])
    with pytest.raises(ValueError, match="not in classes"):
        ClassMap(["person"], dataset={"motorbike": "motorcycle"})
    assert ClassMap.from_any("rtts5").index("motorbike", "dataset") == 3


def test_residual_pipeline_keeps_full_resolution_detail() -> None:
    x = 0.2 + 0.5 * torch.rand(1, 3, 64, 64)  # no clamping anywhere
    pipe = InferenceModel(FakeMethod(lambda t: t + 0.1), working_size=32, residual=True)
    # a constant change survives down/up-sampling exactly and every full-resolution detail of x is kept
    assert torch.allclose(pipe(x), x + 0.1, atol=1e-5)
    plain = InferenceModel(FakeMethod(lambda t: t), working_size=32, residual=False)(x)
    assert not torch.allclose(plain, x, atol=1e-3)  # non-residual loses detail by down/up-sampling


def test_detection_grid_picture() -> None:
    task, samples = ColourBoxDetector(), make_samples()
    from taskbridge.evaluation import DetectionProtocol

    pic = detection_grid(task, samples, Pipeline([RestorerStage(torch.nn.Identity())]), ClassMap(["person", "car"]),
                         [0, 1], DetectionProtocol(img_size=160), tile=96)
    assert pic.dtype == torch.uint8 and pic.shape[0] == 3 and pic.shape[1] > 2 * 96 and pic.shape[2] > 2 * 96


def test_dawn_and_yolo_layouts(shared_data) -> None:
    dawn = DetectionFolder(shared_data / "dawn_fog")
    assert len(dawn) == 200 and dawn.format == "voc"
    s = dawn[0]
    assert s.image.shape[0] == 3 and len(s.names) == len(s.boxes) > 0
    h, w = s.image.shape[-2:]
    assert float(s.boxes[:, 2].max()) <= w and float(s.boxes[:, 3].max()) <= h
    coco8 = DetectionFolder(shared_data / "coco8", split="val")
    assert len(coco8) == 4 and coco8.format == "yolo" and "person" in sum((coco8[i].names for i in range(4)), [])


def test_cifar_resnet20_accuracy_on_a_slice(shared_data) -> None:
    from taskbridge.registry import TASKS

    ds = load_cifar_npz(shared_data / "cifar10_test_subset")
    assert len(ds) == 1017 and ds.class_names[0] == "airplane"
    part = type(ds)(ds.images[:200], ds.labels[:200], ds.class_names)
    res = evaluate_classification(TASKS.create("cifar-resnet20"), part, None, progress=False)
    assert res["top1"] > 0.85 and res["roc_auc_macro"] > 0.95
    dark = evaluate_classification(TASKS.create("cifar-resnet20"), part, None, progress=False,
                                   degrade=lambda x: 0.5 * x**2.2)
    assert dark["top1"] < res["top1"]


def test_cli_classification_writes_json_and_table(shared_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from taskbridge.cli import app

    r = CliRunner().invoke(app, ["evaluate", "--task", "cifar-resnet20", "--data",
                                 str(shared_data / "cifar10_test_subset"), "--limit", "64", "--out", str(tmp_path),
                                 "--restorer", "sci-medium", "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["runs"]["input"]["num_images"] == 64
    table = (tmp_path / "table.txt").read_text()
    assert "top-1" in table and "spread over the images (bootstrap)" in table
    spread = data["runs"]["input"]["bootstrap"]["top1"]
    assert spread["resamples"] == 200 and spread["ci95"][0] <= data["runs"]["input"]["top1"] <= spread["ci95"][1]
    assert 0.0 < spread["se"] < 0.1  # 64 images: about sqrt(p (1 - p) / 64)
    assert spread["images"] == data["runs"]["sci-medium"]["bootstrap"]["top1"]["images"]  # the rows pair
