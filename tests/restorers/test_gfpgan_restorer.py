"""The gfpgan restorer end to end on real photos with faces, randomly initialised (no official weights here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.cli.outputs import LABEL_STRIP
from taskbridge.data.io import read_image
from taskbridge.faces import align
from taskbridge.registry import RESTORERS

SMALL = {"weights": None, "out_size": 128, "narrow": 0.25}  # random weights, a quarter-width 128 px network


@pytest.fixture(scope="module")
def restorer() -> torch.nn.Module:
    torch.manual_seed(0)
    return RESTORERS.create("gfpgan", **SMALL)


def face_masks(model, image: torch.Tensor) -> torch.Tensor:
    """[H, W] union of the paste-back masks of the faces the restorer finds."""
    union = torch.zeros(image.shape[-2:])
    for lm in model.detect(image).landmarks:
        _, matrix = align.align_face(image, lm, model.face_size)
        union = torch.maximum(union, align.paste_mask(model.face_size, matrix, tuple(image.shape[-2:]))[0])
    return union


def test_faces_change_and_everything_else_is_untouched(restorer, shared_data) -> None:
    photo = read_image(shared_data / "faces_fairface" / "images" / "fairface_0004.jpg")
    canvas = torch.nn.functional.pad(photo, (64, 32, 16, 48), value=0.3)  # the face in a larger photo
    with torch.no_grad():
        out, faces = restorer.restore_photo(canvas)
    assert out.shape == canvas.shape and len(faces) >= 1
    mask = face_masks(restorer, canvas)
    assert torch.equal(out[:, mask == 0], canvas[:, mask == 0])
    assert (out[:, mask > 0.99] - canvas[:, mask > 0.99]).abs().mean() > 0.01  # random weights: visibly changed


def test_astronaut_batch_and_upscale(shared_data) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float()[None] / 255
    model = RESTORERS.create("gfpgan", upscale=2, only_center_face=True, **SMALL)
    with torch.no_grad():
        out = model(image)
    assert out.shape == (1, 3, 1024, 1024)
    assert len(model.detect(image[0])) == 1


def test_aligned_crops_skip_detection(shared_data) -> None:
    model = RESTORERS.create("gfpgan", aligned=True, **SMALL)
    assert model.detector is None
    crop = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        out = model(crop)
    assert out.shape == crop.shape and out.min() >= 0 and out.max() <= 1


def test_a_photo_without_faces_is_returned_as_is(restorer) -> None:
    black = torch.zeros(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(restorer(black), black)


def test_restore_cli_writes_photos_and_side_by_side(tmp_path: Path, shared_data) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("fairface_0007.jpg", "fairface_0012.jpg"):
        (src / name).write_bytes((shared_data / "faces_fairface" / "images" / name).read_bytes())
    out = tmp_path / "out"
    args = ["restore", "--restorer", "gfpgan", "--in", str(src), "--out", str(out), "--side-by-side",
            "-s", "weights=None", "-s", "out_size=128", "-s", "narrow=0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("fairface_0007", "fairface_0012"):
        restored = read_image(out / f"{name}.png")
        assert restored.shape == read_image(src / f"{name}.jpg").shape
        pair = read_image(out / f"{name}_side_by_side.png")
        assert pair.shape[-1] == 2 * restored.shape[-1] + 8 and pair.shape[-2] == restored.shape[-2] + LABEL_STRIP
    report = json.loads((out / "restore.json").read_text())
    assert len(report["written"]) == 2 and len(report["side_by_side"]) == 2


def test_missing_official_weights_say_what_to_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    from taskbridge.hub import WeightsNotFoundError

    monkeypatch.setattr("taskbridge.hub._download", lambda spec, target: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsNotFoundError) as err:
        RESTORERS.create("gfpgan")
    text = str(err.value)
    assert "GFPGANv1.4.pth" in text and "github.com/TencentARC/GFPGAN/releases" in text
    assert "\n" not in text
