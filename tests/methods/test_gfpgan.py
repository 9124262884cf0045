"""GFP-GAN training method: its terms, their schedule, gradient routing, EMA, and a tiny CPU fit end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from taskbridge.callbacks import EMA
from taskbridge.cli import app
from taskbridge.faces.align import template
from taskbridge.methods.gfpgan import component_boxes
from taskbridge.registry import METHODS

TINY = {
    "generator": {"type": "gfpgan-clean", "out_size": 32, "narrow": 0.125, "num_style_feat": 32, "num_mlp": 2},
    "discriminator": {"type": "stylegan2", "narrow": 0.125},
    "features": {"type": "vgg16-shift-tolerant", "last": "relu5_3"},
    "r1_every": 2,
    "pyramid_until": 3,
}


@pytest.fixture(scope="module")
def method() -> torch.nn.Module:
    torch.manual_seed(0)
    return METHODS.create("gfpgan", **TINY)


def batch(n: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"A": torch.rand(n, 3, size, size, generator=g), "B": torch.rand(n, 3, size, size, generator=g)}


def test_every_term_is_finite_and_scheduled(method) -> None:
    out = method.training_step(batch(), step=2)
    assert {"loss/G", "loss/D", "loss/components"} <= set(out)
    for key in ("G/l1", "G/pyramid", "G/perceptual", "G/style", "G/gan", "G/component_gan", "G/component_style", "D/r1"):
        assert torch.isfinite(out[key]), key
    later = method.training_step(batch(), step=3)
    assert "G/pyramid" not in later and "D/r1" not in later  # pyramid off from pyramid_until; R1 every 2 steps
    assert "G/identity" not in out  # no identity network offline: off unless one is given


def test_generator_loss_trains_only_the_generator(method) -> None:
    method.zero_grad(set_to_none=True)
    out = method.training_step(batch(), step=1)
    out["loss/G"].backward()
    assert all(p.grad is None for p in method.discriminator.parameters())
    assert all(p.grad is None for p in method.components.parameters())
    trained = [p for p in method.net.parameters() if p.requires_grad]
    assert sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trained) > 0.9 * len(trained)
    method.zero_grad(set_to_none=True)
    out["loss/D"].backward()
    assert all(p.grad is None for p in method.net.parameters())
    assert any(p.grad is not None for p in method.discriminator.parameters())


def test_ema_copy_follows_the_generator(method) -> None:
    (callback,) = method.callbacks()
    assert isinstance(callback, EMA)
    before = [p.clone() for p in method.net_ema.parameters()]
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(0.1)
    callback.on_step_end(None, None, {})
    moved = [float((a - b).abs().max()) for a, b in zip(method.net_ema.parameters(), before, strict=True)]
    assert max(moved) == pytest.approx(0.1 * (1 - method.ema_decay), rel=1e-3)


def test_translate_keeps_the_size_and_refuses_a_reference(method) -> None:
    faces = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        out = method.translate(faces)
    assert out.shape == faces.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="reference"):
        method.translate(faces, reference=faces)


def test_component_boxes_sit_on_the_template() -> None:
    boxes = component_boxes(512, 3, torch.device("cpu"))
    pts = template(512)
    for part, centre in (("left_eye", pts[0]), ("right_eye", pts[1]), ("mouth", (pts[3] + pts[4]) / 2)):
        box = boxes[part]
        assert box.shape == (3, 5) and torch.equal(box[:, 0], torch.arange(3.0))
        assert torch.allclose((box[:, 1:3] + box[:, 3:5]) / 2, centre.expand(3, 2), atol=1e-4)
    assert float(boxes["mouth"][0, 3] - boxes["mouth"][0, 1]) > float(boxes["left_eye"][0, 3] - boxes["left_eye"][0, 1])


def test_defaults_are_the_reference_except_the_generator_lr(method) -> None:
    optim = method.default_optim()
    assert optim["G"]["lr"] == 2e-4 and optim["G"]["betas"] == [0.0, 0.99]
    assert optim["D"]["lr"] == pytest.approx(2e-3 * 2 / 3)  # r1_every 2 here: lazy-R1 scaling


def test_tiny_fit_and_translate_on_real_faces(tmp_path: Path, shared_data) -> None:
    recipe = {
        "name": "gfpgan-tiny", "seed": 0,
        "data": {"root": str(shared_data / "faces_fairface"), "train_A": "images/fairface_000*.jpg",
                 "train_B": "images/fairface_000*.jpg", "resize": 32, "size": 32, "crop": "none", "batch_size": 2},
        "method": {"type": "gfpgan", **TINY},
        "schedule": {"type": "multistep", "milestones": [2], "gamma": 0.5},
        "train": {"steps": 3, "log_every": 1, "ckpt_every": 3, "image_every": 3, "device": "cpu"},
        "val": {"type": "none"},
        "inference": {"working_size": 32, "residual": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(path), f"output_dir={run}"])
    assert result.exit_code == 0, result.output
    src = tmp_path / "faces"
    src.mkdir()
    for name in ("fairface_0001.jpg", "fairface_0002.jpg"):
        (src / name).write_bytes((shared_data / "faces_fairface" / "images" / name).read_bytes())
    out = tmp_path / "restored"
    result = CliRunner().invoke(app, ["translate", "--ckpt", str(run), "--in", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.jpg")) == ["fairface_0001.jpg", "fairface_0002.jpg"]
    from taskbridge.data.io import read_image

    assert read_image(out / "fairface_0001.jpg").shape == (3, 448, 448)
