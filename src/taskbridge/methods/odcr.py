"""ODCR (Wang et al., CVPR 2024; REFERENCE 2.3): CUT with orthogonal decoupling of haze features.

* Projection heads constrained to the Stiefel manifold (Eq. 2): `stiefel_optimizer: orthogonal`
  (PyTorch parametrization, default) or `riemannian` (Eqs. 3-6, `methods.stiefel`).
* DWFC (Eq. 8): per layer two linear classifiers theta_h, theta_c in R^D on projected patches,
  trained with BCE: patches of the hazy input are labelled (y_h, y_c) = (1, 0), patches of the
  clear image (0, 1). Their |theta (.) x| softmax weights pick channels (Eqs. 9-10).
* WPNCE (Eqs. 11-14) on query z (patch of G(H)) with z_{+-} = co-located patch of H, z_{-+} = the
  sampled patches of the unpaired clear image, z_{--} = the other patches of H.
* L_G = lambda_gan L_GAN + lambda_nce L_WPNCE + lambda_ce L_CE + lambda_idt L_idt (Eq. 15).

[decision] flags (REFERENCE 2.3): `swap_weights` (use 1 - w_h in P and w_h in N for z_{+-}, so the
positive term pulls the haze-*unrelated* channels toward H as the prose says; the literal
equations are the default), `weight_scale` (multiply w by this; "D" = the embedding size, so the
weights average 1 instead of 1/D), `detach_weights` (w carries no gradient; default), `idt`
('nce' = CUT identity PatchNCE on B, 'l1' = |G(B) - B|, 'none'). x in Eqs. 9-10 is the query z.
The CE term trains the heads and classifiers on detached encoder features (the encoder side is
a fixed target, as in CUT's PatchNCE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from taskbridge.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from taskbridge.losses.patchnce import PatchNCE
from taskbridge.losses.wpnce import DWFC, wpnce_loss
from taskbridge.methods.common import unpaired_inputs
from taskbridge.methods.cut import CUT
from taskbridge.modules.stiefel import StiefelConstraint
from taskbridge.registry import METHODS
from taskbridge.translators.resnet_generator import CUT_TAPS

STIEFEL_MODES = ("orthogonal", "riemannian")
IDT_MODES = ("nce", "l1", "none")


def _orthogonal_linear(orthogonal_map: str | None):
    def make(i: int, o: int) -> nn.Module:
        return orthogonal(nn.Linear(i, o), orthogonal_map=orthogonal_map)

    return make


class ODCR(CUT):
    """Orthogonal decoupling contrastive regularisation on CUT's networks (unpaired dehazing)."""

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        gan_mode: str = "lsgan",
        lambda_gan: NonNegativeFloat = 1.0,
        lambda_nce: NonNegativeFloat = 1.0,
        lambda_ce: NonNegativeFloat = 1.0,
        lambda_idt: NonNegativeFloat = 1.0,
        idt: str = "nce",
        nce_layers: Sequence[str] = CUT_TAPS,
        num_patches: PositiveInt = 256,
        nce_T: PositiveFloat = 0.07,
        netF_nc: PositiveInt = 256,
        head_init: str = "xavier",
        head_init_gain: PositiveFloat = 0.02,
        stiefel_optimizer: str = "orthogonal",
        orthogonal_map: str | None = None,
        swap_weights: bool = False,
        weight_scale: float | str = 1.0,
        detach_weights: bool = True,
        flip_equivariance: bool = False,
    ) -> None:
        if stiefel_optimizer not in STIEFEL_MODES:
            raise ValueError(f"stiefel_optimizer must be one of {', '.join(STIEFEL_MODES)}, got '{stiefel_optimizer}'")
        if idt not in IDT_MODES:
            raise ValueError(f"idt must be one of {', '.join(IDT_MODES)}, got '{idt}'")
        self.stiefel_optimizer = stiefel_optimizer
        self.orthogonal_map = orthogonal_map
        super().__init__(
            generator=generator, discriminator=discriminator, gan_mode=gan_mode, lambda_gan=lambda_gan,
            lambda_nce=lambda_nce, nce_idt=idt != "none", nce_layers=nce_layers, num_patches=num_patches, nce_T=nce_T,
            netF_nc=netF_nc, use_mlp=True, head_init=head_init, head_init_gain=head_init_gain,
            flip_equivariance=flip_equivariance,
        )
        self.idt = idt
        self.lambda_ce = float(lambda_ce)
        self.lambda_idt = float(lambda_idt)
        self.swap_weights = bool(swap_weights)
        self.detach_weights = bool(detach_weights)
        if weight_scale == "D":
            weight_scale = float(netF_nc)
        self.weight_scale = float(weight_scale)
        self.dwfc = nn.ModuleList([DWFC(netF_nc) for _ in self.nce_layers])

    def _make_nce(self, channels: list[int], num_patches: int, tau: float, nc: int, use_mlp: bool) -> PatchNCE:
        factory = _orthogonal_linear(self.orthogonal_map) if self.stiefel_optimizer == "orthogonal" else None
        return PatchNCE(channels, num_patches=num_patches, nc=nc, tau=tau, use_mlp=True, linear_factory=factory)

    def _init_heads(self, init: str, gain: float) -> None:
        """Orthonormal weights from the start: parametrized heads are; Riemannian ones are projected
        and then kept there by hooks on whichever optimizer steps them."""
        if self.stiefel_optimizer == "riemannian":
            mats = [m.weight for m in self.nce.modules() if isinstance(m, nn.Linear)]
            for m in self.nce.modules():
                if isinstance(m, nn.Linear):
                    nn.init.orthogonal_(m.weight)
                    nn.init.zeros_(m.bias)
            self.stiefel = StiefelConstraint(mats)
            self.stiefel.orthonormalize_()
            self.stiefel.attach_all()

    def stiefel_matrices(self) -> list[Tensor]:
        """The effective head weights Theta (for checks)."""
        return [m.weight for m in self.nce.modules() if isinstance(m, nn.Linear)]

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().optim_groups()
        groups["G"] = [*groups["G"], *self.dwfc.parameters()]
        return groups

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, "ODCR", self.range)
        fake_B, idt_B, src_A, src_B, flipped = self._translate_train(real_A, real_B, self.idt != "none")
        if src_B is None:  # the clear image's patches are needed by WPNCE and the classifier
            with torch.no_grad():
                src_B = self.G.encode(real_B, self.nce_layers)
        loss_gan, loss_D = self._gan_terms(fake_B, real_B)
        q_feats = self._query_feats(fake_B, flipped)

        ids = self.nce.sample(src_A)
        k_h = self.nce.embed(src_A, ids)
        k_c = self.nce.embed(src_B, ids)
        q = self.nce.embed(q_feats, ids)
        wp, ce = [], []
        for layer, (ql, khl, kcl) in enumerate(zip(q, k_h, k_c, strict=True)):
            cls = self.dwfc[layer]
            w_h, w_c = cls.weights(ql.detach() if self.detach_weights else ql)
            if self.detach_weights:
                w_h, w_c = w_h.detach(), w_c.detach()
            wp.append(
                wpnce_loss(ql, khl.detach(), kcl.detach(), w_h, w_c, self.nce.tau, self.swap_weights, self.weight_scale).mean()
            )
            ce.append(0.5 * (cls.ce(khl, hazy=True) + cls.ce(kcl, hazy=False)))
        loss_wp, loss_ce = torch.stack(wp).mean(), torch.stack(ce).mean()

        loss_idt = loss_wp.new_zeros(())
        if self.idt == "nce":
            assert idt_B is not None
            loss_idt = self.nce(src_B, self._query_feats(idt_B, flipped))
        elif self.idt == "l1":
            assert idt_B is not None
            loss_idt = (idt_B - real_B).abs().mean()
        loss_G = (
            self.lambda_gan * loss_gan + self.lambda_nce * loss_wp + self.lambda_ce * loss_ce + self.lambda_idt * loss_idt
        )
        return {
            "loss/G": loss_G,
            "loss/D": loss_D,
            "G/gan": loss_gan.detach(),
            "G/wpnce": loss_wp.detach(),
            "G/ce": loss_ce.detach(),
            "G/idt": loss_idt.detach(),
        }


METHODS.register("odcr", doc="ODCR: CUT + orthogonal heads, haze/clear channel classifier, weighted PatchNCE.")(ODCR)
