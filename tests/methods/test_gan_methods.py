"""5-step CPU smoke fits of cyclegan / cut / fastcut / odcr on real photos, and DDP-readiness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from support.gan import TINY, build_optimizers, load_batch
from taskbridge.registry import METHODS


@pytest.fixture(scope="module")
def batch(shared_data: Path) -> dict[str, Any]:
    return load_batch(shared_data)


@pytest.mark.parametrize("name", list(TINY))
def test_five_step_smoke_fit(name: str, batch: dict[str, Any]) -> None:
    method = METHODS.create(name, **TINY[name])
    method.train()
    groups = method.optim_groups()
    assert list(groups) == ["G", "D"]
    assert method.default_optim()["G"] == {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}
    ids = [{id(p) for p in ps} for ps in groups.values()]
    assert not ids[0] & ids[1], "groups overlap"
    assert ids[0] | ids[1] == {id(p) for p in method.parameters() if p.requires_grad}, "a parameter is in no group"
    params_before = [(n, tuple(p.shape)) for n, p in method.named_parameters()]
    optims = build_optimizers(method)  # built BEFORE the first step (DDP-readiness)
    snapshot = {n: p.detach().clone() for n, p in method.named_parameters()}
    for step in range(5):
        out = method.training_step(batch, step)
        for key, val in out.items():
            assert torch.isfinite(val).all(), f"{name}: {key} is not finite at step {step}"
        for group, params in groups.items():  # engine order: G then D
            optims[group].zero_grad(set_to_none=True)
            out[f"loss/{group}"].backward()
            if step == 0:
                missing = [n for n, p in method.named_parameters() if id(p) in {id(q) for q in params} and p.grad is None]
                assert not missing, f"{name}: no gradient for {missing[:5]} from loss/{group}"
                if group == "G":  # the generator's loss must not leak gradients into D
                    assert all(p.grad is None for p in groups["D"])
            assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
            optims[group].step()
    assert [(n, tuple(p.shape)) for n, p in method.named_parameters()] == params_before
    moved = [n for n, p in method.named_parameters() if p.requires_grad and not torch.equal(p, snapshot[n])]
    assert len(moved) == sum(p.requires_grad for p in method.parameters())
    method.eval()
    with torch.no_grad():
        y = method.translate(batch["A"])
        # the A -> B generator in its [-1, 1] range, mapped back to [0, 1] by hand
        g = method.G_A if name == "cyclegan" else method.G
        want = ((g(batch["A"] * 2 - 1) + 1) / 2).clamp(0, 1)
    assert method.range == (-1.0, 1.0) and torch.equal(y, want)
    vis = method.visuals(batch)
    assert set(vis) >= {"real_A", "fake_B", "real_B"} and torch.allclose(vis["fake_B"], want, atol=1e-6)
    assert torch.allclose(vis["real_A"], batch["A"], atol=1e-6)


def test_bad_batch_is_named() -> None:
    method = METHODS.create("cut", **TINY["cut"])
    with pytest.raises(KeyError, match="'B'"):
        method.training_step({"A": torch.rand(1, 3, 32, 32)}, 0)
    with pytest.raises(ValueError, match=r"batch\['A'\]"):
        method.training_step({"A": torch.rand(1, 32, 32), "B": torch.rand(1, 3, 32, 32)}, 0)


def test_presets_differ_as_published() -> None:
    cut, fast = METHODS.create("cut", **TINY["cut"]), METHODS.create("fastcut", **TINY["fastcut"])
    assert (cut.nce_idt, cut.lambda_nce, cut.flip_equivariance) == (True, 1.0, False)
    assert (fast.nce_idt, fast.lambda_nce, fast.flip_equivariance) == (False, 10.0, True)
    assert fast.nce.tau == cut.nce.tau == 0.07
    with pytest.raises(TypeError, match="bogus"):
        METHODS.create("fastcut", bogus=1)


def test_cut_loss_is_gan_plus_half_of_both_nce(batch: dict[str, Any]) -> None:
    method = METHODS.create("cut", **TINY["cut"])
    out = method.training_step(batch, 0)
    expect = out["G/gan"] + 0.5 * (out["G/nce_A"] + out["G/nce_B"])
    torch.testing.assert_close(out["loss/G"].detach(), expect)


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize(
    "recipe, kind",
    [("cyclegan.yaml", "cyclegan"), ("cyclegan-128.yaml", "cyclegan"), ("cut.yaml", "cut"),
     ("fastcut.yaml", "fastcut"), ("odcr.yaml", "odcr")],
)
def test_recipes_build_their_method(recipe: str, kind: str, shared_data: Path) -> None:
    from taskbridge.config import build, load_recipe, to_dict

    small = ["method.generator.ngf=8", "method.discriminator.ndf=8"]
    cfg = to_dict(load_recipe(RECIPES / recipe, small))
    assert cfg["method"]["type"] == kind
    assert set(cfg) <= {"name", "seed", "output_dir", "data", "method", "optim", "schedule", "train", "val", "notes"}
    for key in ("train_A", "train_B"):
        folders = cfg["data"][key] if isinstance(cfg["data"][key], list) else [cfg["data"][key]]
        assert all((shared_data / f).is_dir() for f in folders), folders
    method = build(METHODS, cfg["method"], f"{recipe}: method")
    assert set(cfg["optim"]) == set(method.optim_groups())
    if kind == "fastcut":  # inherits data and networks from cut.yaml, overrides the preset values
        assert (method.nce_idt, method.lambda_nce, method.flip_equivariance) == (False, 10.0, True)
        assert cfg["schedule"] == {"type": "linear_decay", "interval": "epoch", "n_constant": 150, "n_decay": 50}
    if recipe == "cyclegan-128.yaml":
        assert method.G_A.n_blocks == 6 and cfg["data"]["size"] == 128
