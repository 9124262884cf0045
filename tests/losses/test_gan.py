"""Adversarial losses: hand values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from taskbridge.losses.gan import discriminator_gan_loss, gan_loss, generator_gan_loss


def test_gan_losses_hand_values() -> None:
    p = torch.tensor([0.5, -1.0])
    assert generator_gan_loss(p).item() == pytest.approx((0.25 + 4.0) / 2)
    real, fake = torch.tensor([1.5]), torch.tensor([0.5])
    assert discriminator_gan_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.25))
    assert gan_loss(torch.tensor([0.0]), True, "vanilla").item() == pytest.approx(math.log(2))
    assert gan_loss(torch.tensor([2.0]), False, "vanilla").item() == pytest.approx(math.log1p(math.exp(2)))
    with pytest.raises(ValueError, match="gan_mode"):
        gan_loss(p, True, "wgan")


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_gan_loss_gradcheck(mode: str) -> None:
    p = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gan_loss(t, True, mode) + gan_loss(t, False, mode), (p,))
