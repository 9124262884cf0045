"""Adversarial losses on raw discriminator scores (PatchGAN maps).

`lsgan` (CycleGAN/CUT default): MSE to 1 / 0. `vanilla`: BCE with logits. `nonsaturating`:
softplus(-x) for the generator, the same BCE for the discriminator (CUT's option). `softplus`
(StyleGAN2 / GFP-GAN, BasicSR's `wgan_softplus`): the same per-term forms, but the discriminator loss is
the *sum* softplus(-D(real)) + softplus(D(fake)), not the half-sum. `r1_penalty`: StyleGAN2's R1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.registry import LOSSES

GAN_MODES = ("lsgan", "vanilla", "nonsaturating", "softplus")


def check_gan_mode(mode: str) -> str:
    if mode not in GAN_MODES:
        raise ValueError(f"gan_mode must be one of {', '.join(GAN_MODES)}, got '{mode}'")
    return mode


def gan_loss(pred: Tensor, target_is_real: bool, mode: str = "lsgan") -> Tensor:
    """Mean loss of raw scores `pred` against the real (1) or fake (0) label."""
    check_gan_mode(mode)
    if mode == "lsgan":
        return ((pred - (1.0 if target_is_real else 0.0)) ** 2).mean()
    # vanilla / non-saturating: -log sigmoid(x) for real, -log(1 - sigmoid(x)) for fake
    return F.softplus(-pred).mean() if target_is_real else F.softplus(pred).mean()


def generator_gan_loss(pred_fake: Tensor, mode: str = "lsgan") -> Tensor:
    """The generator wants its fakes scored as real."""
    return gan_loss(pred_fake, True, mode)


def discriminator_gan_loss(pred_real: Tensor, pred_fake: Tensor, mode: str = "lsgan") -> Tensor:
    """1/2 (real + fake), as in both references (slows D relative to G); `softplus`: real + fake (StyleGAN2)."""
    if mode == "softplus":
        return softplus_discriminator_loss(pred_real, pred_fake)
    return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


@LOSSES.register("gan")
class GANLoss(nn.Module):
    """Adversarial loss of one mode: `generator(pred_fake)` and `discriminator(pred_real, pred_fake)`."""

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        self.mode = check_gan_mode(mode)

    def generator(self, pred_fake: Tensor) -> Tensor:
        return generator_gan_loss(pred_fake, self.mode)

    def discriminator(self, pred_real: Tensor, pred_fake: Tensor) -> Tensor:
        return discriminator_gan_loss(pred_real, pred_fake, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def softplus_generator_loss(pred_fake: Tensor) -> Tensor:
    """StyleGAN2's non-saturating generator loss: mean softplus(-D(fake))."""
    return F.softplus(-pred_fake).mean()


def softplus_discriminator_loss(pred_real: Tensor, pred_fake: Tensor) -> Tensor:
    """StyleGAN2's logistic discriminator loss: mean softplus(-D(real)) + mean softplus(D(fake)) (no 1/2)."""
    return F.softplus(-pred_real).mean() + F.softplus(pred_fake).mean()


def r1_penalty(real_pred: Tensor, real_images: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018, Eq. 9): per image the squared norm of dD(real)/d(real), mean over the batch.

    `real_images` must require grad and `real_pred` come from them; the graph is kept (create_graph) so
    the penalty trains D. GFP-GAN adds ``r1_weight / 2 * r1 * every`` on every `every`-th (16th) step.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad (call real.requires_grad_() before D(real))")
    (grad,) = torch.autograd.grad(real_pred.sum(), real_images, create_graph=True)
    return grad.square().reshape(grad.shape[0], -1).sum(1).mean()
