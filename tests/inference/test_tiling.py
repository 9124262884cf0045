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


@pytest.mark.parametrize(("n_out", "n_in"), [(160, 909), (909, 160), (7, 3), (64, 64), (5, 1)])
def test_bilinear_weights_resize_like_interpolate(n_out: int, n_in: int) -> None:
    from taskbridge.inference.model import bilinear_weights

    x = torch.rand(2, n_in, 11)
    want = torch.nn.functional.interpolate(x[None], size=(n_out, 11), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(bilinear_weights(n_out, n_in) @ x, want, atol=1e-4)  # torch rounds its float32 coordinates


@pytest.mark.parametrize("residual", [True, False])
def test_translating_in_bands_equals_the_float_path(photo: Path, residual: bool) -> None:
    from taskbridge.data.transforms import to_uint8
    from taskbridge.inference import InferenceModel

    class Contrast(torch.nn.Module):  # a non-linear, spatially varying change
        def translate(self, x: torch.Tensor) -> torch.Tensor:
            return (x - 0.5) * 1.3 + 0.5 + 0.05 * torch.sin(x * 9)

        def owned_restorer(self) -> None:
            return None

    model = InferenceModel(Contrast(), working_size=(96, 128), residual=residual)
    u8 = read_image(photo, dtype=torch.uint8)
    want = to_uint8(model(u8[None].float() / 255)[0])
    got = model.translate_uint8(u8, band=100)  # 10 bands of 100 rows (the last one short)
    assert got.dtype == torch.uint8 and got.shape == u8.shape
    assert (got.int() - want.int()).abs().max() <= 1  # float summation order: at most one grey level
    assert (got != want).float().mean() < 1e-3
