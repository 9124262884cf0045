"""Photos read ahead by DataLoader workers (`evaluation.loader`): same numbers, same order, bad files skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from taskbridge.data.io import ImageReadError
from taskbridge.evaluation import DetectionFolder, DetectionProtocol, evaluate_detection
from taskbridge.evaluation.datasets import BadItem
from taskbridge.evaluation.loader import default_workers, iter_photos
from taskbridge.registry import TASKS

STEMS = ["foggy-002", "foggy-004", "foggy-018", "haze-013", "haze-016", "mist-035"]


@pytest.fixture(scope="module")
def yolo():  # noqa: ANN201
    return TASKS.create("yolov5n").eval()


def _numbers(res: dict) -> str:
    """Everything but the time, as text: a class without objects has AP NaN, which is != itself."""
    return json.dumps({k: v for k, v in res.items() if k != "seconds"}, sort_keys=True)


def _fog(shared_data: Path, root: Path, stems: list[str]) -> Path:
    """A DAWN-layout folder (images/ + voc_xml/) linking some of the shared photos."""
    (root / "images").mkdir(parents=True)
    (root / "voc_xml").mkdir()
    for stem in stems:
        (root / "images" / f"{stem}.jpg").symlink_to(shared_data / "dawn_fog" / "images" / f"{stem}.jpg")
        (root / "voc_xml" / f"{stem}.xml").symlink_to(shared_data / "dawn_fog" / "voc_xml" / f"{stem}.xml")
    return root


def _darken(x: torch.Tensor) -> torch.Tensor:
    return x * 0.7


@pytest.mark.parametrize("degrade", [None, _darken], ids=["plain", "degraded"])
def test_workers_give_the_same_numbers(shared_data: Path, yolo, degrade) -> None:  # noqa: ANN001
    dawn = DetectionFolder(shared_data / "dawn_fog")
    runs = [evaluate_detection(yolo, dawn, None, progress=False, limit=6, coco=False, degrade=degrade, num_workers=w)
            for w in (0, 1)]
    assert runs[0]["num_images"] == 6
    assert _numbers(runs[0]) == _numbers(runs[1])


def test_bad_files_go_to_on_bad_in_order(shared_data: Path, tmp_path: Path, yolo) -> None:
    root = _fog(shared_data, tmp_path / "fog", STEMS[:4])
    (root / "images" / "foggy-003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 50)  # sorts second
    (root / "images" / "haze-016.jpg").symlink_to(shared_data / "dawn_fog" / "images" / "haze-016.jpg")
    (root / "voc_xml" / "haze-016.xml").write_text("<annotation><object>")  # broken label: sorts last
    folder = DetectionFolder(root)
    names = [p.name for p, _ in folder.items]
    assert names == ["foggy-002.jpg", "foggy-003.jpg", "foggy-004.jpg", "foggy-018.jpg", "haze-013.jpg", "haze-016.jpg"]

    protocol = DetectionProtocol()
    photos = list(iter_photos(folder, num_workers=2, prepare=lambda x: protocol.letterbox(x, 32)))
    assert [p.index for p in photos] == list(range(6))
    assert [isinstance(p.sample, BadItem) for p in photos] == [False, True, False, False, False, True]
    assert [Path(p.sample.path).name for p in photos] == names
    lb, meta = protocol.letterbox(folder[2].image, 32)  # the worker's task input is the main process's
    assert torch.equal(photos[2].task_input, lb) and photos[2].meta == meta

    runs = {}
    for w in (0, 1):
        bad: list[tuple[str, str]] = []
        runs[w] = evaluate_detection(yolo, folder, None, progress=False, coco=False, num_workers=w,
                                     on_bad=lambda path, reason, bad=bad: bad.append((Path(path).name, reason)))
        assert [b[0] for b in bad] == ["foggy-003.jpg", "haze-016.jpg"]
        assert "not a readable image" in bad[0][1] and "not valid VOC XML" in bad[1][1]
    assert runs[1]["num_images"] == 4
    assert _numbers(runs[0]) == _numbers(runs[1])
    with pytest.raises(ImageReadError, match="foggy-003.jpg"):  # no skip policy: the worker's error is raised
        evaluate_detection(yolo, folder, None, progress=False, coco=False, num_workers=1)


def test_default_workers_leave_a_core_to_the_model() -> None:
    assert 0 <= default_workers() <= 2
