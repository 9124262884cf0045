"""The fused inference path of the native YOLOv5n equals its training path, and stays out of the module tree.

`predict()` runs `YOLOv5Task.fast_model()` (Conv+BN folded, in-place SiLU, exact separable max-pool,
head GEMMs writing the decode layout, in-place decode); `raw()`/`candidates()`/`loss()` keep the
unfused graph. Checked on a real DAWN fog photo
(foggy-004.jpg: 8 detections at conf 0.25) letterboxed to 640x640 and 320x640.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.data.transforms import letterbox
from taskbridge.registry import TASKS
from taskbridge.tasks.nms import non_max_suppression
from taskbridge.tasks.yolov5 import YOLOv5Task
from taskbridge.tasks.yolov5.layers import SeparableMaxPool2d

RAW_TOL = 1e-4
BOX_TOL = 1e-3
SHAPES = [(640, 640), (320, 640)]


@pytest.fixture(scope="module")
def task() -> YOLOv5Task:
    return TASKS.create("yolov5n")


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> torch.Tensor:
    return read_image(shared_data / "dawn_fog" / "images" / "foggy-004.jpg")


def boxed(photo: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return letterbox(photo, shape, auto=False)[0][None]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fused_raw_and_candidates_equal_training_path(task: YOLOv5Task, photo: torch.Tensor,
                                                      shape: tuple[int, int]) -> None:
    x = boxed(photo, shape)
    fast = task.fast_model()
    with torch.no_grad():
        train_raw, fast_raw = task.raw(x), fast.raw(x)
        train_pred, train_flat = task.candidates(x)
        fast_pred, fast_flat = fast(x, return_raw=True)
        lean_pred, no_flat = fast(x)
    assert [r.shape for r in fast_raw] == [r.shape for r in train_raw]
    assert train_raw[0].shape[2:4] == (shape[0] // 8, shape[1] // 8)
    worst = max(float((a - b).abs().max()) for a, b in zip(fast_raw, train_raw, strict=True))
    assert worst <= RAW_TOL, worst
    assert fast_flat is not None and float((fast_flat - train_flat).abs().max()) <= RAW_TOL
    # Decoded values are pixels (up to ~640): the raw error scales with them, so compare relatively.
    torch.testing.assert_close(fast_pred, train_pred, rtol=1e-4, atol=RAW_TOL)
    assert no_flat is None and torch.equal(lean_pred, fast_pred)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_predict_equals_training_path_detections(task: YOLOv5Task, photo: torch.Tensor,
                                                 shape: tuple[int, int]) -> None:
    x = boxed(photo, shape)
    with torch.no_grad():
        pred, flat = task.candidates(x)
    for conf in (0.25, 0.1):
        (want,) = non_max_suppression(pred, flat, conf, 0.45, 1000)
        assert len(want) >= 5
        for features in (False, True):
            (got,) = task.predict(x, conf, 0.45, 1000, return_features=features)
            assert len(got) == len(want) and torch.equal(got.labels, want.labels)
            assert float((got.boxes - want.boxes).abs().max()) <= BOX_TOL
            torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=RAW_TOL)
            if features:
                assert got.features is not None
                assert float((got.features - want.features).abs().max()) <= RAW_TOL
            else:
                assert got.features is None


def test_batch_of_two_decodes_each_image_in_place(task: YOLOv5Task, photo: torch.Tensor) -> None:
    """With bs > 1 each level's slice of the [bs, N, no] output is strided: images must not mix."""
    x = boxed(photo, (320, 640))
    x = torch.cat((x, x.flip(-1)))
    with torch.no_grad():
        train_pred, train_flat = task.candidates(x)
        fast_pred, fast_flat = task.fast_model()(x, return_raw=True)
    torch.testing.assert_close(fast_pred, train_pred, rtol=1e-4, atol=RAW_TOL)
    assert fast_flat is not None and float((fast_flat - train_flat).abs().max()) <= RAW_TOL
    for got, want in zip(task.predict(x, 0.25, 0.45), non_max_suppression(train_pred, None, 0.25, 0.45),
                         strict=True):
        assert len(got) == len(want) >= 5 and torch.equal(got.labels, want.labels)
        assert float((got.boxes - want.boxes).abs().max()) <= BOX_TOL


def test_predict_images_uses_fast_path_in_original_pixels(task: YOLOv5Task, photo: torch.Tensor) -> None:
    (got,) = task.predict_images([photo], size=640, conf_thres=0.25, return_features=True)
    assert len(got) >= 5 and got.features is not None and got.features.shape[1] == 5 + task.nc
    assert float(got.boxes[:, 2].max()) > 640  # original photo is 1280 wide: boxes were scaled back


def test_fused_copy_stays_out_of_state_dict_and_parameters() -> None:
    task = TASKS.create("yolov5n")
    before = {k: v.clone() for k, v in task.state_dict().items()}
    fast = task.fast_model()
    assert task.fast_model() is fast  # cached
    after = task.state_dict()
    assert list(after) == list(before) and len(after) == 349
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(p.numel() for p in task.parameters()) == 1_872_157
    task_params = {id(p) for p in task.parameters()}
    assert not any(id(p) in task_params for p in fast.parameters())
    assert all(m is not fast for m in task.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, SeparableMaxPool2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.SiLU) and m.inplace for m in fast.modules()) == 57


def test_cache_follows_dtype_and_new_weights(photo: torch.Tensor) -> None:
    task = TASKS.create("yolov5n")
    x = boxed(photo, (320, 640))
    fast32 = task.fast_model()
    (want,) = task.predict(x, 0.25, 0.45)
    task.double()
    assert not task._fast  # invalidated by the move, rebuilt in float64 on next use
    (got,) = task.predict(x.double(), 0.25, 0.45, return_features=True)
    fast64 = task.fast_model()
    assert fast64 is not fast32 and fast64.model[0].conv.weight.dtype == torch.float64
    assert got.boxes.dtype == torch.float64 and len(got) == len(want) and torch.equal(got.labels, want.labels)
    assert float((got.boxes - want.boxes.double()).abs().max()) <= BOX_TOL
    with torch.no_grad():  # in float64 the fold is exact to ~1e-12
        worst = max(float((a - b).abs().max()) for a, b in zip(fast64.raw(x.double()), task.raw(x.double()),
                                                                 strict=True))
    assert worst <= 1e-9, worst
    task.float()
    assert task.fast_model().model[0].conv.weight.dtype == torch.float32
    # New weights (here: a zeroed head bias) make the cached copy stale.
    sd = copy.deepcopy(task.state_dict())
    sd["model.model.24.m.0.bias"].zero_()
    cached = task.fast_model()
    task.load_state_dict(sd)
    assert task.fast_model() is not cached
    with torch.no_grad():
        torch.testing.assert_close(task.fast_model().raw(x)[0], task.raw(x)[0], rtol=0, atol=RAW_TOL)


def test_separable_max_pool_is_exact() -> None:
    x = torch.randn(2, 5, 9, 13)
    x[0, 1, 2, 3] = float("inf")
    for k in (1, 3, 5):
        assert torch.equal(SeparableMaxPool2d(k)(x), torch.nn.functional.max_pool2d(x, k, 1, k // 2))
    with pytest.raises(ValueError, match="odd kernel"):
        SeparableMaxPool2d(4)
