"""Restorers: frozen contract, exact architectures against the README formulas, and that they restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from taskbridge import hub
from taskbridge.data.io import list_images, read_image, save_image
from taskbridge.registry import DEGRADATIONS, METRICS, RESTORERS
from taskbridge.restorers.dcp import atmospheric_light, dark_channel
from taskbridge.restorers.sci import SCI

NAMES = ["identity", "dcp", "aodnet", "sci-easy", "sci-medium", "sci-difficult"]


def small(image: torch.Tensor, side: int) -> torch.Tensor:
    """[1,3,h,w] with the long side `side` (antialiased), to keep tests fast."""
    h, w = image.shape[-2:]
    s = side / max(h, w)
    size = (round(h * s), round(w * s))
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("name", NAMES)
def test_contract_frozen_eval_odd_sizes(name: str) -> None:
    model = RESTORERS.create(name)
    assert all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not any(m.training for m in model.modules())
    x = torch.rand(2, 3, 37, 53)
    y = model(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 37, 53))


def test_identity_is_identity() -> None:
    x = torch.rand(1, 3, 9, 11)
    assert torch.equal(RESTORERS.create("identity")(x), x)


def test_aodnet_matches_readme_formula() -> None:
    """Independent re-derivation from the README: concat order and J = relu(K*I - K + 1)."""
    sd = hub.load_state("aodnet")
    x = torch.rand(1, 3, 31, 45)

    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        w = sd[f"{name}.weight"]
        return F.relu(F.conv2d(t, w, sd[f"{name}.bias"], padding=w.shape[-1] // 2))

    x1 = conv("e_conv1", x)
    x2 = conv("e_conv2", x1)
    x3 = conv("e_conv3", torch.cat([x1, x2], 1))
    x4 = conv("e_conv4", torch.cat([x2, x3], 1))
    k = conv("e_conv5", torch.cat([x1, x2, x3, x4], 1))
    expected = F.relu(k * x - k + 1).clamp(0, 1)
    torch.testing.assert_close(RESTORERS.create("aodnet")(x), expected)


@pytest.mark.parametrize("level", ["easy", "medium", "difficult"])
def test_sci_matches_readme_formula(level: str) -> None:
    sd = hub.load_state(f"sci-{level}")
    x = torch.rand(1, 3, 29, 41) * 0.3
    p = "enhance."
    fea = F.relu(F.conv2d(x, sd[p + "in_conv.0.weight"], sd[p + "in_conv.0.bias"], padding=1))
    z = F.conv2d(fea, sd[p + "conv.0.weight"], sd[p + "conv.0.bias"], padding=1)
    z = F.batch_norm(z, sd[p + "conv.1.running_mean"], sd[p + "conv.1.running_var"], sd[p + "conv.1.weight"], sd[p + "conv.1.bias"], eps=1e-5)
    fea = fea + F.relu(z)
    fea = torch.sigmoid(F.conv2d(fea, sd[p + "out_conv.0.weight"], sd[p + "out_conv.0.bias"], padding=1))
    expected = (x / (fea + x).clamp(1e-4, 1)).clamp(0, 1)
    torch.testing.assert_close(RESTORERS.create(f"sci-{level}")(x), expected)


def test_sci_rejects_unshared_blocks(tmp_path: Path) -> None:
    sd = dict(hub.load_state("sci-medium"))
    sd["enhance.blocks.0.0.weight"] = sd["enhance.blocks.0.0.weight"] + 1.0
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match="shared"):
        SCI(str(path))


def test_wrong_weights_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"e_conv1.weight": torch.zeros(3, 3, 1, 1)}, path)
    with pytest.raises(RuntimeError, match=r"other\.pt.*missing keys"):
        RESTORERS.create("aodnet", weights=str(path))


def test_sci_brightens_and_lowers_niqe(shared_data: Path) -> None:
    """SCI-medium on its own domain: the 10 'medium' photos at long side 480 (NIQE needs >= 3 rows of 96 px
    blocks to be stable; at 400 px its ranking is noise)."""
    sci, niqe = RESTORERS.create("sci-medium"), METRICS.create("niqe")
    before, after, bright_in, bright_out = [], [], [], []
    for f in list_images(shared_data / "lowlight_unlabeled_sci" / "medium"):
        x = small(read_image(f), 480)
        with torch.no_grad():
            y = sci(x)
        bright_in.append(float(x.mean()))
        bright_out.append(float(y.mean()))
        before.append(float(niqe(x)))
        after.append(float(niqe(y)))
    assert all(o > 1.5 * i for i, o in zip(bright_in, bright_out, strict=True))
    assert sum(after) / len(after) < sum(before) / len(before) - 0.5


@pytest.fixture(scope="module")
def hazed_coco8(shared_data: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four coco8 photos (long side 192) with ASM haze: IA-YOLO depth proxy at 640 px, beta 0.05-0.09, A=0.8."""
    haze = DEGRADATIONS.create("haze", scale="light", airlight=0.8, reference_size=640)
    g = torch.Generator().manual_seed(0)
    pairs = []
    for f in list_images(shared_data / "coco8" / "images")[:4]:
        clean = small(read_image(f), 192)
        pairs.append((clean, haze(clean, generator=g)[0]))
    return pairs


@pytest.mark.parametrize("name", ["aodnet", "dcp"])
def test_dehazers_raise_psnr_and_ssim(name: str, hazed_coco8: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    model, psnr, ssim = RESTORERS.create(name), METRICS.create("psnr"), METRICS.create("ssim")
    for clean, hazy in hazed_coco8:
        out = model(hazy)
        assert float(psnr(out, clean)) > float(psnr(hazy, clean)) + 2.0
        assert float(ssim(out, clean)) > float(ssim(hazy, clean))


def test_dcp_recovers_airlight_and_transmission() -> None:
    """A scene whose dark channel is 0, hazed with known t (0.6; 'sky' rows t=0.01) and A: DCP finds both."""
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 64, 64, generator=g) * 0.8
    clean[:, 0, ::2, ::2] = 0.0  # every 2x2 patch holds a dark pixel
    clean[:, 1, 1::2, 1::2] = 0.0
    a = torch.tensor([0.9, 0.85, 0.8]).view(1, 3, 1, 1)
    t = torch.full((1, 1, 64, 64), 0.6)
    t[..., :8, :] = 0.01  # the far, haze-opaque region where A is observed
    hazy = clean * t + a * (1 - t)
    dcp = RESTORERS.create("dcp", patch=3, refine=False, omega=1.0)
    est_a = atmospheric_light(hazy, dark_channel(hazy, 3), 0.01)
    assert (est_a - a).abs().max() < 0.01
    est_t = dcp.transmission(hazy, a)
    torch.testing.assert_close(est_t[..., 10:, :], t[..., 10:, :], atol=1e-5, rtol=0)
    err_in = float((hazy - clean)[..., 10:, :].abs().mean())
    assert float((dcp(hazy) - clean)[..., 10:, :].abs().mean()) < err_in / 3


def test_restore_cli_keeps_layout(tmp_path: Path, shared_data: Path) -> None:
    from taskbridge.cli import app

    src = tmp_path / "in"
    for i, f in enumerate(list_images(shared_data / "lowlight_unlabeled_sci" / "medium")[:2]):
        save_image(small(read_image(f), 96)[0], src / f"sub{i}" / f"{f.stem}.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["restore", "--restorer", "sci-medium", "--in", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    expected = sorted(p.relative_to(src).with_suffix(".png").as_posix() for p in src.rglob("*.jpg"))
    assert written == expected
    restored = read_image(next(out.rglob("*.png")))
    assert float(restored.mean()) > float(read_image(next(src.rglob("*.jpg"))).mean())

    (src / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["restore", "-r", "identity", "--in", str(src), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0 and "skipped 1" in result.output  # one skip policy: bad inputs are skipped ...
    report = json.loads((tmp_path / "o2" / "restore.json").read_text())
    assert len(report["written"]) == 2 and report["skipped"][0]["file"].endswith("broken.png")  # ... and listed
    result = CliRunner().invoke(app, ["restore", "-r", "identity", "--in", str(src), "--out", str(tmp_path / "o3"),
                                      "--no-skip-bad"])
    assert result.exit_code == 2 and "broken.png: not a readable image" in result.output
