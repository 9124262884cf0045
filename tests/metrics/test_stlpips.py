"""ST-LPIPS (vgg, shift_tolerant): a distance (zero, monotone in noise, symmetric) that equals the
stlpips-pytorch package's own, which is imported here only, with its unused imports stubbed."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from taskbridge.data.io import read_image, save_image
from taskbridge.registry import METRICS

pytest.importorskip("stlpips_pytorch", reason="ST-LPIPS needs the stlpips-pytorch wheel ([features] extra)")


@pytest.fixture(scope="module")
def metric() -> Any:
    return METRICS.create("stlpips")


@pytest.fixture(scope="module")
def face(shared_data: Path) -> torch.Tensor:
    """A real face, 448 px shrunk to 96 to keep VGG-16 on one CPU thread fast."""
    x = read_image(shared_data / "faces_fairface" / "images" / "fairface_0001.jpg")[None]
    return F.interpolate(x, size=(96, 96), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def package_model() -> Iterator[torch.nn.Module]:
    """The package's LPIPS(net='vgg', variant='shift_tolerant'); `IPython.embed` and torchsummary (both
    imported, never used) are stubbed for the import and sys.modules is restored afterwards. Random
    init is skipped while building (2 s, mostly VGG's unused 102 M-weight classifier): every weight the
    distance uses must then come from the file, which the package loads with strict=False, so check."""
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        for name, attr in (("IPython", "embed"), ("torchsummary", "summary")):
            stub = types.ModuleType(name)
            setattr(stub, attr, lambda *args, **kwargs: None)
            mp.setitem(sys.modules, name, stub)
        for fn in ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "constant_"):
            mp.setattr(torch.nn.init, fn, lambda t, *args, **kwargs: t)
        from stlpips_pytorch import stlpips

        model = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False).eval()
    with open(stlpips.__file__.replace("stlpips.py", "weights/vST0.0/vgg_shift_tolerant.pth"), "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    used = {k: v for k, v in model.state_dict().items() if k.startswith(("net.", "lin", "scaling_layer."))
            and not k.startswith("lins.")}  # lins.N are the lin N modules again
    assert used.keys() == state.keys() and all(torch.equal(v, state[k]) for k, v in used.items())
    yield model
    for name in set(sys.modules) - before:  # the package's modules were imported against the stubs
        del sys.modules[name]


def noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def test_zero_monotone_symmetric(metric: Any, face: torch.Tensor) -> None:
    assert metric.lower_better and metric.needs_reference
    assert float(metric(face, face)) == 0.0
    weak, strong = float(metric(noisy(face, 0.02), face)), float(metric(noisy(face, 0.1), face))
    assert 0 < weak < strong
    a, b = noisy(face, 0.05), face.flip(-1)
    assert torch.allclose(metric(a, b), metric(b, a), rtol=1e-6, atol=0)


@pytest.mark.parametrize("size", [(64, 64), (61, 67)])
def test_equals_the_package(metric: Any, package_model: torch.nn.Module, face: torch.Tensor,
                            size: tuple[int, int]) -> None:
    """Random pairs and a real face against its noisy and mirrored versions, odd sizes included."""
    h, w = size
    real = face[..., :h, :w]
    pred = torch.cat([torch.rand(2, 3, h, w), noisy(real, 0.05), real.flip(-1)])
    ref = torch.cat([torch.rand(2, 3, h, w), real, real])
    with torch.no_grad():
        want = package_model(pred, ref, normalize=True).flatten().double()
    got = metric(pred, ref)
    assert got.shape == (4,) and (want > 0).all()
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()


def test_cli_evaluate_quality_with_stlpips(tmp_path: Path, face: torch.Tensor) -> None:
    from taskbridge.cli import app

    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "q.json"
    save_image(face[0], ref / "f.png")
    save_image(noisy(face, 0.05)[0], pred / "f.png")
    args = ["evaluate-quality", "--pred", str(pred), "--ref", str(ref), "--metrics", "psnr,ssim,stlpips", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["lower_better"]["stlpips"] is True and report["mean"]["stlpips"] > 0
    assert report["settings"]["stlpips"]["layers"][-1] == "relu5_3"
