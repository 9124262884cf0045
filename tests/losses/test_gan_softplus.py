"""StyleGAN2 softplus GAN loss and R1 penalty: hand values, the GANLoss mode, gradchecks of R1."""

from __future__ import annotations

import math

import pytest
import torch

from taskbridge.losses.gan import (
    GANLoss,
    discriminator_gan_loss,
    r1_penalty,
    softplus_discriminator_loss,
    softplus_generator_loss,
)
from taskbridge.registry import LOSSES


def _sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_softplus_hand_values() -> None:
    fake, real = torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])
    assert softplus_generator_loss(fake).item() == pytest.approx((_sp(0.0) + _sp(-2.0)) / 2)
    want_d = (_sp(-1.0) + _sp(1.0)) / 2 + (_sp(0.0) + _sp(2.0)) / 2  # sum of the two means, no 1/2
    assert softplus_discriminator_loss(real, fake).item() == pytest.approx(want_d)
    gan = LOSSES.create("gan", mode="softplus")
    assert isinstance(gan, GANLoss)
    assert gan.generator(fake).item() == pytest.approx((_sp(0.0) + _sp(-2.0)) / 2)
    assert gan.discriminator(real, fake).item() == pytest.approx(want_d)
    # the existing modes keep their half-sum
    assert discriminator_gan_loss(real, fake, "vanilla").item() == pytest.approx(want_d / 2)


def _linear_d(w: torch.Tensor, b: torch.Tensor):
    return lambda x: x.flatten(1) @ w + b


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm() -> None:
    w = torch.randn(12, dtype=torch.float64)
    real = torch.rand(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(_linear_d(w, torch.tensor(0.5, dtype=torch.float64))(real), real)
    assert r1.item() == pytest.approx(float(w.square().sum()))
    with pytest.raises(ValueError, match="require grad"):
        r1_penalty(torch.zeros(3), torch.zeros(3, 3, 2, 2))


def test_r1_gradcheck_against_autograd_reference() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 2, 2, generator=g, dtype=torch.float64)

    def r1_of(w: torch.Tensor) -> torch.Tensor:  # tiny linear D with a tanh: second derivatives matter
        x = real.clone().requires_grad_()
        return r1_penalty(torch.tanh(x.flatten(1) @ w), x)

    def reference(w: torch.Tensor) -> torch.Tensor:  # closed form: grad_x tanh(w.x) = (1 - tanh^2) w
        t = torch.tanh(real.flatten(1) @ w)
        return ((1 - t.square()).square() * w.square().sum()).mean()

    w = (0.3 * torch.randn(12, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.allclose(r1_of(w), reference(w))
    assert torch.autograd.gradcheck(r1_of, (w,))
    assert torch.autograd.gradcheck(lambda x: r1_penalty(torch.tanh(x.flatten(1) @ w.detach()), x),
                                    (real.clone().requires_grad_(),))
