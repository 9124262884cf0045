"""CUT and FastCUT (Park et al. 2020; REFERENCE 2.1-2.2): one generator, one PatchGAN, PatchNCE.

L_G = lambda_GAN * LSGAN(D(G(A))) + lambda_NCE * NCE, where NCE = PatchNCE(A, G(A)) or, with
identity NCE (CUT), 1/2 (PatchNCE(A, G(A)) + PatchNCE(B, G(B))). L_D = 1/2 (real + fake) on the
current fake (no image pool). Networks come from the recipe's `generator:` (default: anti-aliased
ResNet-9; it must expose named feature taps) and `discriminator:` (anti-aliased PatchGAN) sections;
PatchNCE heads are created in `__init__` from the generator's tap channels.

Presets (registered names): `cut` = identity NCE, lambda_NCE 1; `fastcut` = no identity NCE,
lambda_NCE 10, flip-equivariance augmentation.

Order of updates: the engine steps G then D within one iteration (both losses come from one
forward); the reference steps D first. D's loss uses detached fakes and its own forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from taskbridge.config import ConfigError
from taskbridge.losses.gan import GANLoss
from taskbridge.losses.patchnce import PatchNCE
from taskbridge.methods.base import Method, check_no_reference
from taskbridge.methods.common import (
    ADAM_GAN,
    build_network,
    frozen,
    network_section,
    to_range,
    to_unit,
    unpaired_inputs,
    with_defaults,
)
from taskbridge.modules.layers import init_weights
from taskbridge.registry import DISCRIMINATORS, METHODS, TRANSLATORS
from taskbridge.translators.base import FeatureTaps, value_range
from taskbridge.translators.resnet_generator import CUT_TAPS

GENERATOR = {"type": "resnet-generator", "ngf": 64, "n_blocks": 9, "norm": "instance", "antialias": True,
             "init": "xavier", "init_gain": 0.02}
DISCRIMINATOR = {"type": "patchgan", "ndf": 64, "n_layers": 3, "norm": "instance", "antialias": True,
                 "init": "xavier", "init_gain": 0.02}


class CUT(Method):
    """Contrastive unpaired translation A -> B (defaults: the CUT preset)."""

    inference_modules = ("G",)

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        gan_mode: str = "lsgan",
        lambda_gan: NonNegativeFloat = 1.0,
        lambda_nce: NonNegativeFloat = 1.0,
        nce_idt: bool = True,
        nce_layers: Sequence[str] = CUT_TAPS,
        num_patches: PositiveInt = 256,
        nce_T: PositiveFloat = 0.07,
        netF_nc: PositiveInt = 256,
        use_mlp: bool = True,
        head_init: str = "xavier",
        head_init_gain: PositiveFloat = 0.02,
        flip_equivariance: bool = False,
    ) -> None:
        super().__init__()
        self.gan = GANLoss(gan_mode)
        self.lambda_gan = float(lambda_gan)
        self.lambda_nce = float(lambda_nce)
        self.nce_idt = bool(nce_idt)
        self.flip_equivariance = bool(flip_equivariance)
        self.G = build_network(TRANSLATORS, generator, GENERATOR, "method.generator")
        self.D = build_network(DISCRIMINATORS, discriminator, DISCRIMINATOR, "method.discriminator")
        if not isinstance(self.G, FeatureTaps):
            raise ConfigError(f"method.generator: {type(self).__name__} reads named features of its generator "
                              f"(PatchNCE); '{network_section(generator, GENERATOR)['type']}' has none "
                              "(use resnet-generator)")
        self.range = value_range(self.G)
        self.size_multiple = int(getattr(self.G, "size_multiple", 1))
        self.min_size = int(getattr(self.G, "min_size", 1))
        self.nce_layers = tuple(nce_layers)
        self.G.check_taps(self.nce_layers)
        self.nce = self._make_nce([self.G.tap_channels[t] for t in self.nce_layers], num_patches, nce_T, netF_nc, use_mlp)
        self._init_heads(head_init, head_init_gain)

    # -- pieces ODCR overrides ------------------------------------------------------------
    def _make_nce(self, channels: list[int], num_patches: int, tau: float, nc: int, use_mlp: bool) -> PatchNCE:
        return PatchNCE(channels, num_patches=num_patches, nc=nc, tau=tau, use_mlp=use_mlp)

    def _init_heads(self, init: str, gain: float) -> None:
        init_weights(self.nce, init, gain)

    # -- shared forward --------------------------------------------------------------------
    def _flip(self) -> bool:
        return self.flip_equivariance and self.training and bool(torch.rand(()) < 0.5)

    def _source_feats(self, taps: list[Tensor], sl: slice, image: Tensor, flipped: bool) -> list[Tensor]:
        """Detached features of the unflipped input: reuse the translation pass's taps when the
        input was not flipped (identical values, no extra pass), else encode again without grad."""
        if not flipped:
            return [t[sl].detach() for t in taps]
        with torch.no_grad():
            return self.G.encode(image, self.nce_layers)

    def _query_feats(self, image: Tensor, flipped: bool) -> list[Tensor]:
        """Encoder features of a translated image, flipped back when its input was flipped."""
        feats = self.G.encode(image, self.nce_layers)
        return [f.flip(-1) for f in feats] if flipped else feats

    def _translate_train(
        self, real_A: Tensor, real_B: Tensor, with_B: bool
    ) -> tuple[Tensor, Tensor | None, list[Tensor], list[Tensor] | None, bool]:
        """One G pass over A (and B for identity terms): fake_B, idt_B, source taps of A and B."""
        n = real_A.shape[0]
        x = torch.cat([real_A, real_B], 0) if with_B else real_A
        flipped = self._flip()
        if flipped:
            x = x.flip(-1)
        fake, taps = self.G.forward_with_taps(x, self.nce_layers)
        fake_B, idt_B = fake[:n], (fake[n:] if with_B else None)
        src_A = self._source_feats(taps, slice(0, n), real_A, flipped)
        src_B = self._source_feats(taps, slice(n, None), real_B, flipped) if with_B else None
        return fake_B, idt_B, src_A, src_B, flipped

    def _gan_terms(self, fake_B: Tensor, real_B: Tensor) -> tuple[Tensor, Tensor]:
        with frozen(self.D):
            loss_gan = self.gan.generator(self.D(fake_B))
        loss_D = self.gan.discriminator(self.D(real_B), self.D(fake_B.detach()))
        return loss_gan, loss_D

    # -- Method contract -----------------------------------------------------------------
    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Heads share G's optimizer settings (the reference has a third Adam with the same ones)."""
        return {"G": [*self.G.parameters(), *self.nce.parameters()], "D": list(self.D.parameters())}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"G": dict(ADAM_GAN), "D": dict(ADAM_GAN)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, type(self).__name__, self.range)
        fake_B, idt_B, src_A, src_B, flipped = self._translate_train(real_A, real_B, self.nce_idt)
        loss_gan, loss_D = self._gan_terms(fake_B, real_B)
        out: dict[str, Tensor] = {}
        loss_G = self.lambda_gan * loss_gan
        if self.lambda_nce > 0:
            nce = self.nce(src_A, self._query_feats(fake_B, flipped))
            out["G/nce_A"] = nce.detach()
            if self.nce_idt:
                assert src_B is not None and idt_B is not None
                nce_B = self.nce(src_B, self._query_feats(idt_B, flipped))
                out["G/nce_B"] = nce_B.detach()
                nce = 0.5 * (nce + nce_B)
            loss_G = loss_G + self.lambda_nce * nce
        out.update({"loss/G": loss_G, "loss/D": loss_D, "G/gan": loss_gan.detach()})
        return out

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        check_no_reference(self, reference)
        return to_unit(self.G(to_range(images, self.range)), self.range)

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, type(self).__name__, self.range)
        vis = {"real_A": real_A, "fake_B": self.G(real_A), "real_B": real_B}
        if self.nce_idt:
            vis["idt_B"] = self.G(real_B)
        return {k: to_unit(v, self.range) for k, v in vis.items()}


FastCUT = with_defaults(
    CUT,
    "FastCUT: no identity NCE, lambda_NCE 10, flip-equivariance augmentation.",
    nce_idt=False,
    lambda_nce=10.0,
    flip_equivariance=True,
)
FastCUT.__name__ = FastCUT.__qualname__ = "FastCUT"

METHODS.register("cut", doc="CUT: contrastive unpaired translation (PatchNCE + identity NCE, LSGAN).")(CUT)
METHODS.register("fastcut", doc="FastCUT: CUT without identity NCE, lambda_NCE 10, flip equivariance.")(FastCUT)
