"""Degradations: haze (atmospheric scattering) and low light (gamma + noise); determinism, gradients, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.data.io import read_image
from taskbridge.degrade import HAZE_LEVELS, Haze, LowLight, depth_proxy, haze, lowlight
from taskbridge.registry import DEGRADATIONS


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_and_options_checked() -> None:
    assert {"haze", "lowlight"} <= set(DEGRADATIONS.names())
    assert isinstance(DEGRADATIONS.create("haze", scale="heavy"), Haze)
    assert isinstance(DEGRADATIONS.create("lowlight", gamma=2.2, gain=0.5), LowLight)
    with pytest.raises(TypeError, match="unknown option.*density"):
        DEGRADATIONS.create("haze", density=3)
    with pytest.raises(ValueError, match="haze scale"):
        Haze(scale="medium")
    with pytest.raises(ValueError, match="gamma"):
        LowLight(gamma=(5, 1.5))
    with pytest.raises(ValueError, match="airlight"):
        Haze(airlight=1.5)
    with pytest.raises(ValueError, match="RGB CHW or NCHW"):
        Haze()(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("make", [lambda: Haze(), lambda: LowLight(shot_noise=(0, 0.02), read_noise=(0, 0.02))])
def test_deterministic_under_a_seed(make) -> None:
    x = torch.rand(4, 3, 16, 20)
    deg = make()
    y1, p1 = deg(x, _gen(5))
    y2, p2 = deg(x, _gen(5))
    assert torch.equal(y1, y2) and all(torch.equal(p1[k], p2[k]) for k in p1)
    y3, p3 = deg(x, _gen(6))
    assert not torch.equal(y1, y3)
    torch.manual_seed(1)
    g1 = deg(x)[0]
    torch.manual_seed(1)
    assert torch.equal(g1, deg(x)[0])  # no generator: the global RNG, seeded by torch.manual_seed
    # the recorded parameters reproduce the output through apply() (noise is drawn after the parameters)
    g = _gen(5)
    deg.sample_params(x.shape[0], tuple(x.shape[-2:]), g)
    assert torch.equal(deg.apply(x, p1, g), y1)


def test_chw_input_and_batch_params() -> None:
    x = torch.rand(3, 10, 12)
    y, p = Haze(beta=0.1)(x, _gen())
    assert y.shape == x.shape and p["beta"].shape == (1,)
    y, p = LowLight()(torch.rand(5, 3, 4, 4), _gen())
    assert p["gamma"].shape == (5,) and ((p["gamma"] >= 1.5) & (p["gamma"] <= 5.0)).all()


def test_haze_formula_and_depth_proxy() -> None:
    h, w = 9, 14
    d = depth_proxy(h, w)
    assert d.shape == (h, w) and torch.argmax(d).item() == (h // 2) * w + w // 2
    assert d[h // 2, w // 2].item() == pytest.approx(math.sqrt(14))
    assert d[0, 0].item() == pytest.approx(-0.04 * math.hypot(h // 2, w // 2) + math.sqrt(14))
    assert depth_proxy(2000, 2000).min().item() == 0.0  # clamped where IA-YOLO's proxy goes negative
    # resolution-independent variant: a 64 px image hazed "as if" 512 px matches the 512 px proxy
    small, big = depth_proxy(64, 64, reference_size=512), depth_proxy(512, 512)
    assert torch.allclose(small[32, 32], big[256, 256]) and abs(small[0, 0] - big[0, 0]) < 1e-4
    x = torch.rand(1, 3, h, w)
    y = haze(x, 0.1, 0.5)
    t = torch.exp(-0.1 * d)
    assert torch.allclose(y, x * t + 0.5 * (1 - t))
    assert y.min() >= 0 and y.max() <= 1


def test_haze_monotonic_in_beta(shared_data: Path) -> None:
    x = read_image(shared_data / "coco8" / "images" / "val" / "000000000042.jpg")[None, :, ::8, ::8]
    prev = None
    for beta in (0.0, 0.05, 0.09, 0.1, 0.14, 0.3):
        y = haze(x, beta, 0.5)
        dist = (y - 0.5).abs()  # distance to the airlight shrinks as haze thickens
        if prev is not None:
            assert (dist <= prev + 1e-6).all() and dist.mean() < prev.mean()
        prev = dist
    assert torch.equal(haze(x, 0.0, 0.5), x)


def test_haze_scales_sample_their_levels() -> None:
    x = torch.rand(200, 3, 2, 2)
    for scale, levels in HAZE_LEVELS.items():
        beta = Haze(scale=scale)(x, _gen())[1]["beta"]
        allowed = torch.tensor([0.01 * i + 0.05 for i in levels])
        assert torch.isclose(beta[:, None], allowed[None]).any(1).all()
        assert len(torch.unique((beta * 100).round())) == len(levels)  # every level is used
    light, heavy = Haze(scale="light")(x, _gen())[1]["beta"], Haze(scale="heavy")(x, _gen())[1]["beta"]
    assert light.max() < heavy.min()
    fixed = Haze(beta=(0.2, 0.3), airlight=(0.7, 0.9))(x, _gen())[1]
    assert ((fixed["beta"] >= 0.2) & (fixed["beta"] <= 0.3)).all() and ((fixed["airlight"] >= 0.7) & (fixed["airlight"] <= 0.9)).all()


def test_lowlight_cifar_reference_and_gamma() -> None:
    x = torch.rand(2, 3, 8, 8)
    y, p = LowLight(gamma=2.2, gain=0.5)(x, _gen())
    assert torch.allclose(y, 0.5 * x**2.2, atol=1e-6)
    assert p["gamma"].tolist() == pytest.approx([2.2, 2.2]) and p["gain"].tolist() == [0.5, 0.5]
    assert torch.allclose(lowlight(x, torch.tensor([1.5, 5.0])), torch.stack([x[0] ** 1.5, x[1] ** 5.0]), atol=1e-6)
    assert (lowlight(x, 3.0) <= x + 1e-7).all()  # darker everywhere


def test_lowlight_noise_statistics() -> None:
    x = torch.full((1, 3, 128, 128), 0.5)
    shot, read = 0.02, 0.01
    y = lowlight(x, 1.0, 1.0, shot, read, _gen(3), clip=False)
    expected_std = math.sqrt(shot * 0.5 + read**2)
    assert abs(y.std().item() - expected_std) < 0.05 * expected_std
    assert abs(y.mean().item() - 0.5) < 3 * expected_std / 128
    assert torch.equal(y, lowlight(x, 1.0, 1.0, shot, read, _gen(3), clip=False))
    clipped = lowlight(x * 0.02, 1.0, 1.0, shot, read, _gen(3))
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_gradcheck_haze() -> None:
    x = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    airlight = torch.tensor([[0.5, 0.6, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: haze(a, b, c), (x, beta, airlight))


def test_gradcheck_lowlight_with_noise() -> None:
    x = (torch.rand(1, 3, 4, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()

    def fn(a: torch.Tensor) -> torch.Tensor:  # fresh generator per call: the same noise every evaluation
        return lowlight(a, 2.2, 0.5, 0.01, 0.005, generator=_gen(1), clip=False)

    assert torch.autograd.gradcheck(fn, (x,))
    mod_x = x.detach().clone().float().requires_grad_()
    out, _ = LowLight(shot_noise=0.01)(mod_x, _gen())
    out.sum().backward()
    assert mod_x.grad is not None and torch.isfinite(mod_x.grad).all() and mod_x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def three_images(tmp_path: Path, shared_data: Path) -> Path:
    src = tmp_path / "clean"
    (src / "sub").mkdir(parents=True)
    files = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[:3]
    for f, dst in zip(files, (src, src, src / "sub"), strict=True):  # quarter size keeps the test fast
        with Image.open(f) as im:
            im.reduce(4).save(dst / f.name, quality=95)
    return src


def test_cli_degrade_haze(three_images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "hazy"
    res = runner.invoke(app, ["degrade", "--kind", "haze", "--in", str(three_images), "--out", str(out),
                              "--seed", "3", "--param", "scale=heavy", "--ext", "png"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 haze image(s)" in res.output
    side = json.loads((out / "degrade.json").read_text())
    assert side["kind"] == "haze" and side["options"] == {"scale": "heavy"} and side["seed"] == 3
    assert len(side["images"]) == 3 and side["skipped"] == []
    for rel, rec in side["images"].items():
        assert rel.endswith(".png") and (out / rel).is_file()
        assert 0.10 - 1e-6 <= rec["beta"] <= 0.14 + 1e-6 and rec["airlight"] == 0.5
        clean = read_image(three_images / rec["source"])
        again = haze(clean, rec["beta"], rec["airlight"])  # the sidecar reproduces the image
        assert (read_image(out / rel) - again).abs().max() <= 1 / 255 + 1e-6
    first = (out / next(iter(side["images"]))).read_bytes()
    res2 = runner.invoke(app, ["degrade", "--kind", "haze", "--in", str(three_images), "--out", str(tmp_path / "h2"),
                               "--seed", "3", "--param", "scale=heavy", "--ext", "png"])
    assert res2.exit_code == 0 and (tmp_path / "h2" / next(iter(side["images"]))).read_bytes() == first


def test_cli_degrade_lowlight_and_errors(three_images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "dark"
    (three_images / "broken.jpg").write_bytes(b"not a jpeg")
    res = runner.invoke(app, ["degrade", "--kind", "lowlight", "--in", str(three_images), "--out", str(out),
                              "-p", "gamma=[1.5, 5]", "-p", "read_noise=0.01"])
    assert res.exit_code == 0, res.output
    side = json.loads((out / "degrade.json").read_text())
    assert [k["file"] for k in side["skipped"]] == ["broken.jpg"] and "broken.jpg" in res.output
    assert "not a readable image" in side["skipped"][0]["reason"]
    assert {Path(k).suffix for k in side["images"]} == {".jpg"} and all(1.5 <= r["gamma"] <= 5 for r in side["images"].values())
    bad_kind = runner.invoke(app, ["degrade", "--kind", "snow", "--in", str(three_images), "--out", str(out)])
    assert bad_kind.exit_code != 0 and "unknown degradation 'snow'" in bad_kind.output and "haze" in bad_kind.output
    bad_opt = runner.invoke(app, ["degrade", "--kind", "haze", "--in", str(three_images), "--out", str(out), "-p", "gamma=2"])
    assert bad_opt.exit_code != 0 and "gamma" in bad_opt.output
    same = runner.invoke(app, ["degrade", "--kind", "haze", "--in", str(three_images), "--out", str(three_images)])
    assert same.exit_code == 2 and "is the input folder" in same.output
    strict = runner.invoke(app, ["degrade", "--kind", "haze", "--in", str(three_images), "--out", str(tmp_path / "s"),
                                 "--no-skip-bad"])
    assert strict.exit_code == 2 and "broken.jpg" in strict.output and "--skip-bad to continue" in strict.output
    again = runner.invoke(app, ["degrade", "--kind", "lowlight", "--in", str(three_images), "--out", str(out)])
    assert again.exit_code == 2 and "would be replaced" in again.output and "--overwrite" in again.output
