"""Equivalence of the native YOLOv5n with the public reference implementation (test-only extra).

The reference is the `yolov5` PyPI package (7.0.14, extra `reference`), loading the original pickled
checkpoint offline: env TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (the pickle holds model classes) and
HF_HUB_OFFLINE=1, with an absolute path (a relative name is taken as a Hugging Face repo id), via
`yolov5.models.experimental.attempt_load(path, device="cpu")`. Compared in float32: raw head outputs,
decoded candidates, post-NMS boxes (bus.jpg, zidane.jpg from the package, and the 8 coco8 images),
and the training loss against `yolov5.utils.loss.ComputeLoss` with all target weights 1.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.data.transforms import letterbox
from taskbridge.registry import TASKS
from taskbridge.tasks.base import DetectionTargets
from taskbridge.tasks.nms import non_max_suppression
from taskbridge.tasks.yolov5 import YOLOv5Task, decode


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not _installed("yolov5"),
                       reason="reference package not installed: pip install -e '.[reference]' (yolov5==7.0.14)"),
]
TOL = 1e-3
HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0,
       "label_smoothing": 0.0}


@pytest.fixture(scope="module")
def ref(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[torch.nn.Module]:
    ckpt = (shared_data / "yolov5n_coco" / "yolov5n.pt").resolve()
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "HF_HUB_OFFLINE": "1",
           "YOLO_CONFIG_DIR": str(tmp_path_factory.mktemp("ultralytics"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        try:
            from yolov5.models.experimental import attempt_load
        except ImportError as err:  # e.g. setuptools >= 81 has no pkg_resources
            pytest.skip(f"reference package yolov5 not importable ({err}); install '.[reference]'")
        model = attempt_load(str(ckpt), device="cpu").float().eval()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    model.hyp = dict(HYP)  # ComputeLoss reads the gains from model.hyp
    yield model




@pytest.fixture(scope="module")
def task() -> YOLOv5Task:
    return TASKS.create("yolov5n")


def _images(shared_data: Path) -> list[Path]:
    import yolov5

    pkg = Path(yolov5.__file__).parent / "data" / "images"
    return [pkg / "bus.jpg", pkg / "zidane.jpg", *sorted((shared_data / "coco8" / "images").glob("*/*.jpg"))]


def _xyxy_to_norm_cxcywh(b: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return torch.stack(((b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                        (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), 1)


def test_outputs_and_nms_match_reference(ref: torch.nn.Module, task: YOLOv5Task, shared_data: Path) -> None:
    from yolov5.utils.general import non_max_suppression as ref_nms

    paths = _images(shared_data)
    assert paths[0].is_file() and len(paths) == 10
    worst = {"raw": 0.0, "decoded": 0.0, "boxes": 0.0, "scores": 0.0}
    n_boxes = 0
    for k, p in enumerate(paths):
        x = letterbox(read_image(p), 640, auto=True)[0][None]
        with torch.no_grad():
            ref_pred, ref_raw = ref(x)
            ours_raw = task.raw(x)
        ours_pred, ours_flat = decode(ours_raw, task.anchors, task.strides)  # = task.predict's path
        for a, b in zip(ours_raw, ref_raw, strict=True):
            assert a.shape == b.shape
            worst["raw"] = max(worst["raw"], float((a - b).abs().max()))
        worst["decoded"] = max(worst["decoded"], float((ours_pred - ref_pred).abs().max()))
        # detect.py settings on all images; val.py settings (many boxes, slow) on bus and zidane.
        for conf, iou, ml, md in ((0.25, 0.45, False, 1000), (0.001, 0.6, True, 300))[: 2 if k < 2 else 1]:
            r = ref_nms(ref_pred, conf, iou, multi_label=ml, max_det=md)[0]
            o = non_max_suppression(ours_pred, ours_flat, conf, iou, md, multi_label=ml)[0]
            assert len(o) == len(r), p.name
            assert torch.equal(o.labels, r[:, 5].long()), p.name
            worst["boxes"] = max(worst["boxes"], float((o.boxes - r[:, :4]).abs().max()))
            worst["scores"] = max(worst["scores"], float((o.scores - r[:, 4]).abs().max()))
            n_boxes += len(o)
    print(f"max |ours - reference| over {len(paths)} images, {n_boxes} boxes: {worst}")
    assert all(v <= TOL for v in worst.values()), worst
    # README facts about the reference: bus.jpg -> 4 person + bus, zidane.jpg -> 2 person + tie.
    bus, zidane = task.predict_images([read_image(paths[0]), read_image(paths[1])], conf_thres=0.25)
    names = task.class_names
    assert sorted(names[i] for i in bus.labels) == ["bus", "person", "person", "person", "person"]
    assert sorted(names[i] for i in zidane.labels) == ["person", "person", "tie"]


def test_loss_matches_reference_compute_loss(ref: torch.nn.Module, task: YOLOv5Task, shared_data: Path) -> None:
    """Same raw tensors, same targets (the reference's own detections of 4 images, plus labels that
    exercise every offset), weights 1: total and the three parts must agree."""
    from yolov5.utils.loss import ComputeLoss

    compute = ComputeLoss(ref)
    paths = _images(shared_data)[2:6]
    x = torch.stack([letterbox(read_image(p), 320, auto=False)[0] for p in paths])
    raw = task.raw(x)
    dets = task.predict(x, conf_thres=0.2, iou_thres=0.45)
    bi = torch.cat([torch.full((len(d),), k) for k, d in enumerate(dets)])
    labels = torch.cat([d.labels for d in dets])
    boxes = torch.cat([_xyxy_to_norm_cxcywh(d.boxes, 320, 320) for d in dets])
    g = torch.Generator().manual_seed(3)
    extra = torch.cat((torch.rand(20, 2, generator=g), torch.rand(20, 2, generator=g) * 0.5 + 0.01), 1)
    bi = torch.cat((bi, torch.randint(0, 4, (20,), generator=g)))
    labels = torch.cat((labels, torch.randint(0, 80, (20,), generator=g)))
    boxes = torch.cat((boxes, extra))
    cases = {
        "targets": (DetectionTargets(bi, labels, boxes), torch.cat((bi[:, None].float(), labels[:, None].float(), boxes), 1)),
        "empty": (DetectionTargets.empty(), torch.zeros(0, 6)),
    }
    for name, (ours_t, ref_t) in cases.items():
        ref_total, ref_parts = compute([r.detach().clone() for r in raw], ref_t)
        total, parts = task.loss(raw, ours_t)
        ours_parts = torch.stack([parts["box"], parts["obj"], parts["cls"]])
        print(f"{name}: ours {total.item():.8f} reference {ref_total.item():.8f} "
              f"max part diff {float((ours_parts - ref_parts).abs().max()):.3g}")
        torch.testing.assert_close(total.detach(), ref_total.reshape(()), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours_parts, ref_parts, rtol=1e-5, atol=1e-7)
    assert len(bi) > 25


def test_input_gradients_match_reference(ref: torch.nn.Module, task: YOLOv5Task, shared_data: Path) -> None:
    """d(loss)/d(image) through our frozen model equals the reference's, and no weight gets a gradient."""
    from yolov5.utils.loss import ComputeLoss

    x = letterbox(read_image(_images(shared_data)[1]), 256, auto=True)[0][None]
    tg = DetectionTargets(torch.tensor([0, 0]), torch.tensor([0, 27]),
                          torch.tensor([[0.7, 0.5, 0.3, 0.9], [0.4, 0.7, 0.05, 0.3]]))
    xo = x.clone().requires_grad_(True)
    task.loss(task.raw(xo), tg)[0].backward()
    xr = x.clone().requires_grad_(True)
    ref_raw = ref(xr)[1]
    ComputeLoss(ref)(ref_raw, torch.cat((tg.batch_index[:, None].float(), tg.labels[:, None].float(), tg.boxes), 1))[0].backward()
    assert xo.grad is not None and xr.grad is not None and xo.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.parameters())
    diff = float((xo.grad - xr.grad).abs().max())
    print(f"max |grad ours - grad reference| = {diff:.3g} (max |grad| {float(xr.grad.abs().max()):.3g})")
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-6)
