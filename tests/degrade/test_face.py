"""GFP-GAN face degradation: kernels, determinism, reproduction from params, fixed settings, gradients, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.degrade.face import FaceDegradation, blur, face_degrade, gaussian_kernels
from taskbridge.registry import DEGRADATIONS


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_with_gfpgan_defaults_and_checked_options() -> None:
    deg = DEGRADATIONS.create("face")
    assert isinstance(deg, FaceDegradation)
    assert (deg.kernel_size, deg.blur_sigma, deg.downsample, deg.noise, deg.jpeg) == (41, (0.1, 10.0), (0.8, 8.0),
                                                                                     (0.0, 20.0), (60.0, 100.0))
    assert (deg.aniso_prob, deg.jitter_prob, deg.gray_prob, deg.upsample) == (0.5, 0.3, 0.01, "bilinear")
    assert DEGRADATIONS.create("face", blur_sigma=[1, 2], upsample="bicubic").blur_sigma == (1.0, 2.0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        FaceDegradation(kernel_size=40)
    with pytest.raises(ValueError, match="jpeg"):
        FaceDegradation(jpeg=(60, 120))
    with pytest.raises(ValueError, match="blur_sigma"):
        FaceDegradation(blur_sigma=0)
    with pytest.raises(TypeError, match="upsample"):
        DEGRADATIONS.create("face", upsample="nearest")


def test_kernels_normalised_and_match_the_covariance_formula() -> None:
    sx, sy, th = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([1.0, 1.0, 0.5]), torch.tensor([0.0, 0.0, 0.7])
    k = gaussian_kernels(sx, sy, th, 21)
    assert k.shape == (3, 21, 21) and torch.allclose(k.sum((1, 2)), torch.ones(3, dtype=k.dtype))
    assert torch.allclose(k[0], k[0].T) and torch.allclose(k[0], k[0].flip(0))  # isotropic: symmetric
    # anisotropic, theta 0, sx > sy: x (columns) spreads wider than y (rows)
    ax = torch.arange(21, dtype=k.dtype) - 10
    var_x, var_y = (k[1].sum(0) * ax**2).sum(), (k[1].sum(1) * ax**2).sum()
    assert var_x > 5 * var_y
    # the rotated one against exp(-p^T S^-1 p / 2), S = R diag(sx^2, sy^2) R^T, p = (x, y) = (col, row)
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64)) @ rot.T
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    pts = torch.stack([xx, yy], -1)
    ref = torch.exp(-0.5 * (pts @ torch.linalg.inv(cov) * pts).sum(-1))
    assert torch.allclose(k[2], ref / ref.sum(), atol=1e-12)
    assert not torch.allclose(k[2], k[2].T, atol=1e-4)  # rotated anisotropic: not symmetric about the diagonal


def test_blur_keeps_constants_and_handles_tiny_images() -> None:
    x = torch.full((2, 3, 12, 10), 0.3)
    k = gaussian_kernels(torch.tensor([10.0, 0.1]), torch.tensor([10.0, 0.1]), torch.zeros(2), 41)
    y = blur(x, k)  # 41 px kernel on a 10 px image: cropped to 19 px and renormalised
    assert y.shape == x.shape and torch.allclose(y, x, atol=1e-6)
    z = torch.rand(1, 3, 9, 9)
    assert torch.allclose(blur(z, gaussian_kernels(torch.tensor([0.1]), torch.tensor([0.1]), torch.zeros(1))), z, atol=1e-6)


def test_seeded_determinism_and_reproduction_from_params() -> None:
    x = torch.rand(3, 3, 32, 40)
    deg = FaceDegradation(color_jitter_prob=0.5, gray_prob=0.3)
    y1, p1 = deg(x, _gen(5))
    y2, p2 = deg(x, _gen(5))
    assert torch.equal(y1, y2) and p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    y3, _ = deg(x, _gen(6))
    assert not torch.equal(y1, y3)
    assert all(v.shape == (3,) for v in p1.values())
    g = _gen(5)  # noise is drawn after the parameters: the same generator state reproduces the image
    deg.sample_params(3, (32, 40), g)
    assert torch.equal(deg.apply(x, p1, g), y1)
    assert y1.shape == x.shape and y1.min() >= 0 and y1.max() <= 1
    assert torch.equal((y1 * 255).round() / 255, y1)  # 8-bit grid, as the reference's last step


def test_sampled_params_stay_in_their_ranges() -> None:
    p = FaceDegradation().sample_params(400, (8, 8), _gen(1))
    aniso = p["anisotropic"] > 0
    assert 0.4 < aniso.float().mean() < 0.6 and torch.equal(p["sigma_x"][~aniso], p["sigma_y"][~aniso])
    assert (p["theta"][~aniso] == 0).all() and p["theta"].abs().max() <= math.pi
    assert (p["sigma_x"].min() >= 0.1) and (p["sigma_y"].max() <= 10)
    assert p["downsample"].min() >= 0.8 and p["downsample"].max() <= 8 and p["noise"].max() <= 20
    assert torch.equal(p["jpeg"], p["jpeg"].floor()) and p["jpeg"].min() >= 60 and p["jpeg"].max() <= 100
    jittered = p["jitter_r"] != 0
    assert 0.2 < jittered.float().mean() < 0.4 and p["jitter_g"].abs().max() <= 20 / 255
    assert p["gray"].sum() < 20


def test_fixed_settings_give_exactly_the_fixed_params() -> None:
    deg = FaceDegradation(blur_sigma=2.0, downsample=4, noise=5, jpeg=75, color_jitter_prob=0, gray_prob=0)
    y, p = deg(torch.rand(2, 3, 32, 24), _gen(3))
    expected = {"anisotropic": 0.0, "sigma_x": 2.0, "sigma_y": 2.0, "theta": 0.0, "downsample": 4.0, "noise": 5.0,
                "jpeg": 75.0, "jitter_r": 0.0, "jitter_g": 0.0, "jitter_b": 0.0, "gray": 0.0}
    assert {k: v.tolist() for k, v in p.items()} == {k: [v, v] for k, v in expected.items()}
    assert y.shape == (2, 3, 32, 24)
    lowres, _ = FaceDegradation(blur_sigma=2.0, downsample=4, noise=0, jpeg=90, scale=4)(torch.rand(2, 3, 32, 24), _gen())
    assert lowres.shape == (2, 3, 8, 6)  # scale: the low-resolution image itself


def test_mild_setting_is_close_to_the_clean_image() -> None:
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(64, 64), mode="bilinear")  # smooth content
    deg = FaceDegradation(blur_sigma=0.1, downsample=1.0, noise=0, jpeg=100, color_jitter_prob=0, gray_prob=0,
                          quantize=False)
    y, _ = deg(x, _gen())
    assert (y - x).abs().mean() < 0.01  # what is left is JPEG's chroma subsampling at quality 100


def test_gray_probability_one_gives_equal_channels() -> None:
    y, p = FaceDegradation(gray_prob=1.0, color_jitter_prob=1.0)(torch.rand(2, 3, 24, 24), _gen(2))
    assert (p["gray"] == 1).all() and torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


def test_gradient_flows_to_the_clean_image() -> None:
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    y, _ = FaceDegradation(noise=(0, 5), color_jitter_prob=0)(x, _gen(4))
    (y * torch.linspace(0, 1, 24)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the functional form too, with an upsample other than the reference's bilinear
    x.grad = None
    params = FaceDegradation().sample_params(2, (24, 24), _gen(1))
    face_degrade(x, params, _gen(1), upsample="bicubic").mean().backward()
    assert x.grad.abs().sum() > 0


def test_cli_degrade_face(tmp_path: Path, shared_data: Path) -> None:
    src = tmp_path / "clean"
    src.mkdir()
    for f in sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[:2]:
        with Image.open(f) as im:
            im.reduce(8).save(src / f.name, quality=95)
    out = tmp_path / "faces"
    res = CliRunner().invoke(app, ["degrade", "--kind", "face", "--in", str(src), "--out", str(out), "--seed", "1",
                                   "-p", "downsample=[2, 4]", "--ext", "png"])
    assert res.exit_code == 0, res.output
    side = json.loads((out / "degrade.json").read_text())
    assert len(side["images"]) == 2 and all(2 <= r["downsample"] <= 4 and "jpeg" in r for r in side["images"].values())
