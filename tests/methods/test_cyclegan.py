"""CycleGAN objective: loss composition with the paper's weights, pool, generators, [0,1] boundary."""

from __future__ import annotations

from pathlib import Path

import torch

from support.gan import TINY, load_batch
from taskbridge.methods.cyclegan import CycleGAN


def test_generator_loss_uses_paper_weights(shared_data: Path) -> None:
    batch = load_batch(shared_data)
    m = CycleGAN(**TINY["cyclegan"])
    assert (m.lambda_A, m.lambda_B, m.lambda_idt, m.pool_A.size) == (10.0, 10.0, 0.5, 3)
    out = m.training_step(batch, 0)
    expect = (
        out["G/gan_A"] + out["G/gan_B"] + 10 * out["G/cycle_A"] + 10 * out["G/cycle_B"]
        + 0.5 * (10 * out["G/idt_A"] + 10 * out["G/idt_B"])
    )
    torch.testing.assert_close(out["loss/G"].detach(), expect)
    torch.testing.assert_close(out["loss/D"].detach(), out["D/A"] + out["D/B"])
    assert len(m.pool_A) == len(m.pool_B) == 2  # the D step saw fakes through the pools


def test_cycle_term_by_hand_and_no_identity_when_off(shared_data: Path) -> None:
    batch = load_batch(shared_data, n=1)
    m = CycleGAN(**{**TINY["cyclegan"], "lambda_idt": 0.0})
    out = m.training_step(batch, 0)
    assert "G/idt_A" not in out
    a = batch["A"] * 2 - 1
    rec = m.G_B(m.G_A(a))
    torch.testing.assert_close(out["G/cycle_A"], (rec - a).abs().mean().detach())


def test_translate_maps_unit_range_both_ways() -> None:
    m = CycleGAN(**TINY["cyclegan"])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.translate(x), ((m.G_A(x * 2 - 1) + 1) / 2).clamp(0, 1))
        assert m.translate_back(x).shape == x.shape
