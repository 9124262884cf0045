"""Restoring in tiles: bounded memory, and the same pixels as restoring the whole photo at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.data.io import read_image
from taskbridge.inference import Pipeline, RestorerStage
from taskbridge.inference.tiling import restore_uint8, tiled
from taskbridge.registry import RESTORERS


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> Path:
    return shared_data / "dawn_fog" / "images" / "foggy-002.jpg"  # 1280 x 909


@pytest.mark.parametrize("name", ["aodnet", "sci-medium", "dcp", "identity"])
def test_tiles_equal_the_whole_photo(name: str, photo: Path) -> None:
    restorer = RESTORERS.create(name)
    x = read_image(photo)[None]
    with torch.no_grad():
        whole = restorer(x)
        tiles = tiled(restorer, x, tile=256)  # 5 x 4 tiles, each with its receptive margin
    assert (whole - tiles).abs().max() <= 1 / 255  # measured: identical
    assert torch.equal((whole * 255).round(), (tiles * 255).round())


def test_eight_bit_tiles_equal_the_float_result_saved(photo: Path) -> None:
    restorer = RESTORERS.create("aodnet")
    with torch.no_grad():
        want = (restorer(read_image(photo)[None])[0].clamp(0, 1) * 255).round().to(torch.uint8)
    got = restore_uint8(restorer, read_image(photo, dtype=torch.uint8), tile=300)
    assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_global_context_comes_from_the_whole_photo_or_a_reduced_copy(photo: Path) -> None:
    dcp = RESTORERS.create("dcp")
    x = read_image(photo)[None]
    with torch.no_grad():
        exact = tiled(dcp, x, tile=256)
        reduced = tiled(dcp, x, tile=256, context_pixels=600_000)  # airlight from a 919 x 653 copy
    assert not torch.equal(exact, reduced)  # the estimate moved ...
    assert (exact - reduced).abs().mean() < 0.005  # ... a little (measured 0.0018; 0.10 from a 168 x 119 copy)


def test_restore_cli_tiles_give_the_untiled_files(photo: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / photo.name).symlink_to(photo)
    runner = CliRunner()
    for tile in (256, 4096):
        res = runner.invoke(app, ["restore", "-r", "sci-medium", "--in", str(src), "--out", str(tmp_path / f"t{tile}"),
                                  "--tile", str(tile)])
        assert res.exit_code == 0, res.output
    a = (tmp_path / "t256" / "foggy-002.png").read_bytes()
    assert a == (tmp_path / "t4096" / "foggy-002.png").read_bytes()
    with Image.open(tmp_path / "t256" / "foggy-002.png") as im:
        assert im.size == (1280, 909)


def test_the_evaluation_stage_tiles_too(photo: Path) -> None:
    aod = RESTORERS.create("aodnet")
    x = read_image(photo)[None]
    with torch.no_grad():
        assert torch.equal(Pipeline([RestorerStage(aod)])(x), aod(x).clamp(0, 1))  # 1280 px: two tiles of 1024
