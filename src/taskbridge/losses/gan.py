"""Adversarial losses on raw discriminator scores (PatchGAN maps).

`lsgan` (CycleGAN/CUT default): MSE to 1 / 0. `vanilla`: BCE with logits. `nonsaturating`:
softplus(-x) for the generator, the same BCE for the discriminator (CUT's option).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.registry import LOSSES

GAN_MODES = ("lsgan", "vanilla", "nonsaturating")


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
    """1/2 (real + fake), as in both references (slows D relative to G)."""
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
