"""CycleGAN (Zhu et al. 2017; REFERENCE 4): two generators, two discriminators, cycle consistency.

G_A: A -> B, G_B: B -> A; D_A scores B-domain images, D_B A-domain images. Networks come from the
recipe's `generator:` and `discriminator:` sections (defaults: ResNet-9 generator, 70x70 PatchGAN).
L_G = GAN(D_A(G_A(A))) + GAN(D_B(G_B(B))) + lambda_A |G_B(G_A(A)) - A|_1 + lambda_B |G_A(G_B(B)) - B|_1
      + lambda_idt (lambda_B |G_A(B) - B|_1 + lambda_A |G_B(A) - A|_1),
lambda_A = lambda_B = 10, lambda_idt = 0.5, LSGAN; L_D = 1/2 (real + pooled fake) per D.
L1 terms are in the generators' value range ([-1, 1] for the ResNet generator), like the reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, NonNegativeInt
from taskbridge.discriminators.image_pool import ImagePool
from taskbridge.losses.gan import GANLoss
from taskbridge.methods.base import Method, check_no_reference
from taskbridge.methods.common import ADAM_GAN, build_network, frozen, to_range, to_unit, unpaired_inputs
from taskbridge.registry import DISCRIMINATORS, METHODS, TRANSLATORS
from taskbridge.translators.base import value_range

GENERATOR = {"type": "resnet-generator", "ngf": 64, "n_blocks": 9, "norm": "instance", "antialias": False,
             "init": "normal", "init_gain": 0.02}
DISCRIMINATOR = {"type": "patchgan", "ndf": 64, "n_layers": 3, "norm": "instance", "antialias": False,
                 "init": "normal", "init_gain": 0.02}


@METHODS.register("cyclegan")
class CycleGAN(Method):
    """CycleGAN: cycle-consistent adversarial translation A <-> B (LSGAN, image pool 50)."""

    inference_modules = ("G_A", "G_B")

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        gan_mode: str = "lsgan",
        lambda_A: NonNegativeFloat = 10.0,
        lambda_B: NonNegativeFloat = 10.0,
        lambda_idt: NonNegativeFloat = 0.5,
        pool_size: NonNegativeInt = 50,
    ) -> None:
        super().__init__()
        self.gan = GANLoss(gan_mode)
        self.lambda_A, self.lambda_B, self.lambda_idt = float(lambda_A), float(lambda_B), float(lambda_idt)
        self.G_A = build_network(TRANSLATORS, generator, GENERATOR, "method.generator")
        self.G_B = build_network(TRANSLATORS, generator, GENERATOR, "method.generator")
        self.D_A = build_network(DISCRIMINATORS, discriminator, DISCRIMINATOR, "method.discriminator")
        self.D_B = build_network(DISCRIMINATORS, discriminator, DISCRIMINATOR, "method.discriminator")
        self.range = value_range(self.G_A)
        self.size_multiple = int(getattr(self.G_A, "size_multiple", 1))
        self.min_size = int(getattr(self.G_A, "min_size", 1))
        # seeded from torch's generator, so a seeded run is reproducible (the reference's pool is not)
        seeds = torch.randint(0, 2**31 - 1, (2,)).tolist()
        self.pool_A, self.pool_B = ImagePool(pool_size, seeds[0]), ImagePool(pool_size, seeds[1])  # fakes of A / B

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "G": [*self.G_A.parameters(), *self.G_B.parameters()],
            "D": [*self.D_A.parameters(), *self.D_B.parameters()],
        }

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"G": dict(ADAM_GAN), "D": dict(ADAM_GAN)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, "CycleGAN", self.range)
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        with frozen(self.D_A), frozen(self.D_B):
            gan_A = self.gan.generator(self.D_A(fake_B))
            gan_B = self.gan.generator(self.D_B(fake_A))
        cyc_A = (rec_A - real_A).abs().mean()
        cyc_B = (rec_B - real_B).abs().mean()
        loss_G = gan_A + gan_B + self.lambda_A * cyc_A + self.lambda_B * cyc_B
        out: dict[str, Tensor] = {}
        if self.lambda_idt > 0:
            idt_A = (self.G_A(real_B) - real_B).abs().mean()
            idt_B = (self.G_B(real_A) - real_A).abs().mean()
            loss_G = loss_G + self.lambda_idt * (self.lambda_B * idt_A + self.lambda_A * idt_B)
            out.update({"G/idt_A": idt_A.detach(), "G/idt_B": idt_B.detach()})
        pooled_B = self.pool_B.query(fake_B)
        pooled_A = self.pool_A.query(fake_A)
        d_A = self.gan.discriminator(self.D_A(real_B), self.D_A(pooled_B))
        d_B = self.gan.discriminator(self.D_B(real_A), self.D_B(pooled_A))
        out.update(
            {
                "loss/G": loss_G,
                "loss/D": d_A + d_B,
                "G/gan_A": gan_A.detach(),
                "G/gan_B": gan_B.detach(),
                "G/cycle_A": cyc_A.detach(),
                "G/cycle_B": cyc_B.detach(),
                "D/A": d_A.detach(),
                "D/B": d_B.detach(),
            }
        )
        return out

    def training_state(self) -> dict:
        """The image pools (stored fakes + sampler state): saved by the engine for exact resume."""
        return {"pool_A": self.pool_A.state(), "pool_B": self.pool_B.state()}

    def load_training_state(self, state: dict) -> None:
        self.pool_A.load_state(state["pool_A"])
        self.pool_B.load_state(state["pool_B"])

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        check_no_reference(self, reference)
        return to_unit(self.G_A(to_range(images, self.range)), self.range)

    def translate_back(self, images: Tensor) -> Tensor:
        """B -> A with the second generator."""
        return to_unit(self.G_B(to_range(images, self.range)), self.range)

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, "CycleGAN", self.range)
        fake_B, fake_A = self.G_A(real_A), self.G_B(real_B)
        unit = {"real_A": real_A, "fake_B": fake_B, "rec_A": self.G_B(fake_B),
                "real_B": real_B, "fake_A": fake_A, "rec_B": self.G_A(fake_A)}
        return {k: to_unit(v, self.range) for k, v in unit.items()}
