"""GFP-GAN training (REFERENCE 5): blind face restoration with a generative facial prior.

Each step degrades a batch of clean aligned faces (domain B of the loader) with the face
degradation (paper ranges, `degradation:`), restores them and trains with the reference's terms:

* generator `G`: L1 (0.1), pyramid L1 on the intermediate RGB outputs (1, off after
  `pyramid_until` steps), perceptual (1) + Gram style (50) on a frozen feature network, StyleGAN2
  adversarial softplus (0.1), facial-component adversarial (1) + Gram style on the component
  discriminators' features (200), identity L1 (10) when an identity network is given;
* discriminator `D`: softplus loss + lazy R1 (10, every 16 steps, scaled by the interval);
* `components`: eye / eye / mouth discriminators, vanilla GAN on crops.

An EMA copy of the generator (`net_ema`, decay 0.5 ** (32 / 10 000)) is what `translate` uses
and what checkpoints keep for inference.

[decision] Component crops come from the FFHQ template positions scaled to the face size, not
per-image boxes: training faces are aligned to that template by `taskbridge align-faces` (a
5-point fit leaves a few pixels of residual, small against the crop), while the reference reads
boxes derived from 68-point landmark files that exist only for FFHQ.
[decision] Feature network: the offline shift-tolerant VGG-16 by default (its relu layers nearest
the reference's VGG-19 conv1_2, conv2_2, conv3_4, conv4_4, conv5_4); `features: {type: vgg19}`
once its weights are in place. No pretrained identity network exists offline (the reference's
ArcFace weights download at run time), so the identity term is off unless `identity:` names a
feature network in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from taskbridge.bounds import NonNegativeFloat, NonNegativeInt, PositiveInt
from taskbridge.callbacks import EMA, Callback
from taskbridge.faces.align import template
from taskbridge.losses.gan import r1_penalty
from taskbridge.losses.identity import IdentityLoss
from taskbridge.losses.perceptual import PerceptualLoss, gram_matrix
from taskbridge.methods.base import Method, check_no_reference
from taskbridge.methods.common import build_network, frozen
from taskbridge.registry import DEGRADATIONS, DISCRIMINATORS, FEATURES, METHODS, TRANSLATORS

GENERATOR = {"type": "gfpgan-clean", "out_size": 512, "channel_multiplier": 2}
DISCRIMINATOR = {"type": "stylegan2", "channel_multiplier": 2}
COMPONENT = {"type": "facial-component"}
DEGRADATION = {"type": "face"}
FEATURE_NET = {"type": "vgg16-shift-tolerant", "last": "relu5_3"}
#: perceptual layer weights (the reference's VGG-19 conv1_2 .1, conv2_2 .1, conv3_4, conv4_4, conv5_4 1)
LAYER_WEIGHTS = {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_3": 1.0, "relu4_3": 1.0, "relu5_3": 1.0}
EMA_DECAY = 0.5 ** (32 / 10_000)
PARTS = ("left_eye", "right_eye", "mouth")
#: roi_align output sides at a 512 face (scaled with the face, to a multiple of 4 the component D needs)
CROP_AT_512 = {"left_eye": 80, "right_eye": 80, "mouth": 120}


def component_boxes(size: int, batch: int, device: torch.device) -> dict[str, Tensor]:
    """[batch, 5] roi boxes (index, x1, y1, x2, y2) of each part of a `size` face aligned to the template."""
    pts = template(size)
    iod = float((pts[1] - pts[0]).norm())
    mouth_w = float((pts[4] - pts[3]).norm())
    centres = {"left_eye": pts[0], "right_eye": pts[1], "mouth": (pts[3] + pts[4]) / 2}
    halves = {"left_eye": 0.25 * iod, "right_eye": 0.25 * iod, "mouth": 0.55 * mouth_w}
    out = {}
    for part in PARTS:
        c, h = centres[part], halves[part]
        box = torch.tensor([c[0] - h, c[1] - h, c[0] + h, c[1] + h], device=device)
        idx = torch.arange(batch, device=device, dtype=box.dtype)[:, None]
        out[part] = torch.cat([idx, box.expand(batch, 4)], dim=1)
    return out


class Embedding(nn.Module):
    """A feature network's `layer`, flattened: the identity embedding of a face."""

    def __init__(self, net: nn.Module, layer: str) -> None:
        super().__init__()
        self.net, self.layer = net, layer

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images, [self.layer])[0].flatten(1)


def identity_network(section: Mapping[str, Any] | None) -> nn.Module | None:
    """`identity: {type: <feature network>, layer: <name>, ...}` -> embedding module; None: no identity term."""
    if not section:
        return None
    spec = dict(section)
    layer = spec.pop("layer", None)
    if not layer:
        raise ValueError("method.identity: give the feature layer used as embedding, e.g. {type: ..., layer: relu5_3}")
    return Embedding(build_network(FEATURES, spec, {}, "method.identity"), str(layer))


@METHODS.register("gfpgan")
class GFPGANMethod(Method):
    """GFP-GAN: U-Net + StyleGAN2 prior with CS-SFT, pyramid/perceptual/adversarial/component/identity losses."""

    inference_modules = ("net_ema",)
    frozen_modules = ("features", "identity", "degradation")

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        component_discriminator: dict[str, Any] | None = None,
        features: dict[str, Any] | None = None,
        degradation: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        use_components: bool = True,
        l1_weight: NonNegativeFloat = 0.1,
        pyramid_weight: NonNegativeFloat = 1.0,
        pyramid_until: NonNegativeInt = 50_000,
        perceptual_weight: NonNegativeFloat = 1.0,
        style_weight: NonNegativeFloat = 50.0,
        layer_weights: Mapping[str, float] | None = None,
        gan_weight: NonNegativeFloat = 0.1,
        r1_weight: NonNegativeFloat = 10.0,
        r1_every: PositiveInt = 16,
        component_gan_weight: NonNegativeFloat = 1.0,
        component_style_weight: NonNegativeFloat = 200.0,
        identity_weight: NonNegativeFloat = 10.0,
        ema_decay: float = EMA_DECAY,
    ) -> None:
        super().__init__()
        self.net = build_network(TRANSLATORS, generator, GENERATOR, "method.generator")
        self.face_size = int(self.net.out_size)
        self.net_ema = EMA.copy_of(self.net)
        self.discriminator = build_network(DISCRIMINATORS, discriminator, DISCRIMINATOR, "method.discriminator",
                                           out_size=self.face_size)
        self.components = nn.ModuleDict({
            part: build_network(DISCRIMINATORS, component_discriminator, COMPONENT, "method.component_discriminator")
            for part in (PARTS if use_components else ())
        })
        self.features = build_network(FEATURES, features, FEATURE_NET, "method.features")
        self.features.requires_grad_(False)
        self.perceptual = PerceptualLoss(self.features, dict(layer_weights or LAYER_WEIGHTS),
                                         perceptual_weight=perceptual_weight, style_weight=style_weight)
        self.degradation = build_network(DEGRADATIONS, degradation, DEGRADATION, "method.degradation")
        self.identity = IdentityLoss(identity_network(identity), weight=identity_weight)
        self.l1_weight, self.pyramid_weight, self.pyramid_until = float(l1_weight), float(pyramid_weight), int(pyramid_until)
        self.gan_weight, self.r1_weight, self.r1_every = float(gan_weight), float(r1_weight), int(r1_every)
        self.component_gan_weight = float(component_gan_weight)
        self.component_style_weight = float(component_style_weight)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"gfpgan: ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = float(ema_decay)
        self.min_size = self.size_multiple = 1

    # ------------------------------------------------------------------ engine contract
    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        trainable = [p for p in self.net.parameters() if p.requires_grad]  # not the unused, frozen mapping MLP
        groups = {"G": trainable, "D": list(self.discriminator.parameters())}
        if len(self.components):
            groups["components"] = list(self.components.parameters())
        return groups

    def default_optim(self) -> dict[str, dict[str, Any]]:
        """The reference's Adam settings (D's lr and beta2 scaled for lazy R1 every 16 steps), except G's lr.

        [decision] G: 2e-4, not the reference's 2e-3. The reference trains `GFPGANv1`, whose layers
        scale their weights at run time (equalised learning rate: stored weights ~ N(0, 1)); the clean
        network, the one the released weights fit, has those scales folded into the weights (~1/sqrt(fan_in)),
        so the same Adam step is 20-70x larger relative to each weight. At 2e-3 our 128 px FairFace fit
        diverged within 20 steps (output values ~1e11); at 2e-4 it trains.
        """
        ratio = self.r1_every / (self.r1_every + 1)
        return {"G": {"type": "adam", "lr": 2e-4, "betas": [0.0, 0.99]},
                "D": {"type": "adam", "lr": 2e-3 * ratio, "betas": [0.0, 0.99 ** ratio]},
                "components": {"type": "adam", "lr": 2e-3, "betas": [0.9, 0.99]}}

    def callbacks(self) -> list[Callback]:
        return [EMA(self.net, self.net_ema, self.ema_decay, name="net_ema")]

    # ------------------------------------------------------------------ data
    def faces(self, batch: dict[str, Any]) -> Tensor:
        """The clean faces of the batch (domain B), checked to be face-sized."""
        if "B" not in batch:
            raise KeyError(f"gfpgan: batch has no 'B' (clean faces) images (keys: {', '.join(map(str, batch))})")
        gt = batch["B"]
        if gt.ndim != 4 or gt.shape[1] != 3 or tuple(gt.shape[-2:]) != (self.face_size, self.face_size):
            raise ValueError(f"gfpgan: clean faces must be [B, 3, {self.face_size}, {self.face_size}] (the generator's "
                             f"out_size; set data.size), got {tuple(gt.shape)}")
        return gt

    @torch.no_grad()
    def degrade(self, gt: Tensor) -> Tensor:
        lq, _ = self.degradation(gt)
        return lq.clamp(0.0, 1.0)

    # ------------------------------------------------------------------ losses
    def pyramid_loss(self, rgbs: list[Tensor], gt: Tensor) -> Tensor:
        """L1 of each intermediate RGB against the target halved (bilinear) to its size, coarse to fine."""
        total = gt.new_zeros(())
        for rgb in rgbs:
            target = F.interpolate(gt, size=rgb.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            total = total + F.l1_loss(rgb, target)
        return total

    def crops(self, images: Tensor) -> dict[str, Tensor]:
        boxes = component_boxes(self.face_size, images.shape[0], images.device)
        ratio = self.face_size / 512
        return {part: roi_align(images, boxes[part], output_size=max(16, 4 * round(CROP_AT_512[part] * ratio / 4)),
                                aligned=True) for part in self.components}

    def generator_losses(self, out: Tensor, rgbs: list[Tensor], gt: Tensor, step: int,
                         fake_crops: dict[str, Tensor], real_crops: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every G term (images in [-1, 1]; the component crops of `out` and `gt`); `total` is their weighted sum."""
        unit_out, unit_gt = (out + 1) / 2, (gt + 1) / 2
        terms: dict[str, Tensor] = {"l1": self.l1_weight * F.l1_loss(out, gt)}
        if self.pyramid_weight > 0 and step < self.pyramid_until:
            terms["pyramid"] = self.pyramid_weight * self.pyramid_loss(rgbs, gt)
        percep, style = self.perceptual(unit_out, unit_gt)
        if percep is not None:
            terms["perceptual"] = percep
        if style is not None:
            terms["style"] = style
        with frozen(self.discriminator):
            terms["gan"] = self.gan_weight * F.softplus(-self.discriminator(out)).mean()
        if len(self.components):
            gan, comp_style = out.new_zeros(()), out.new_zeros(())
            for part, disc in self.components.items():
                with frozen(disc):
                    score, fake_feats = disc(fake_crops[part], return_feats=True)
                    with torch.no_grad():
                        _, real_feats = disc(real_crops[part], return_feats=True)
                gan = gan + F.softplus(-score).mean()  # vanilla GAN, generator side
                comp_style = comp_style + 0.5 * sum(
                    F.l1_loss(gram_matrix(f), gram_matrix(r)) for f, r in zip(fake_feats, real_feats, strict=True))
            terms["component_gan"] = self.component_gan_weight * gan
            terms["component_style"] = self.component_style_weight * comp_style
        if self.identity.enabled and self.identity.weight > 0:
            terms["identity"] = self.identity(unit_out, unit_gt)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def discriminator_loss(self, fake: Tensor, real: Tensor, step: int) -> dict[str, Tensor]:
        """Softplus loss; every `r1_every` steps + the R1 penalty on reals, scaled by the interval
        (on those steps the reals carry a gradient, so one D pass over them serves both terms)."""
        r1_step = self.r1_weight > 0 and step % self.r1_every == 0
        if r1_step:
            real = real.detach().requires_grad_(True)
        real_pred = self.discriminator(real)
        loss = F.softplus(-real_pred).mean() + F.softplus(self.discriminator(fake)).mean()
        out = {"gan": loss.detach()}
        if r1_step:
            r1 = r1_penalty(real_pred, real)
            loss = loss + self.r1_weight / 2 * r1 * self.r1_every
            out["r1"] = r1.detach()
        out["total"] = loss
        return out

    def component_loss(self, fake_crops: dict[str, Tensor], real_crops: dict[str, Tensor]) -> Tensor:
        """Vanilla GAN loss of each component discriminator on detached crops."""
        total = next(iter(real_crops.values())).new_zeros(())
        for part, disc in self.components.items():
            real_score, fake_score = disc(real_crops[part]), disc(fake_crops[part].detach())
            total = total + F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
        return total

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        clean = self.faces(batch)
        gt = clean * 2 - 1
        lq = self.degrade(clean) * 2 - 1
        out, rgbs = self.net(lq)
        fake_crops, real_crops = self.crops(out), self.crops(gt)  # empty without component discriminators
        g = self.generator_losses(out, rgbs, gt, step, fake_crops, real_crops)
        d = self.discriminator_loss(out.detach(), gt, step)
        result = {"loss/G": g.pop("total"), "loss/D": d.pop("total")}
        result.update({f"G/{k}": v.detach() for k, v in g.items()})
        result.update({f"D/{k}": v for k, v in d.items()})
        if len(self.components):
            result["loss/components"] = self.component_loss(fake_crops, real_crops)
        return result

    # ------------------------------------------------------------------ inference
    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        """Aligned faces in [0, 1] (any size: resized to the network's and back) -> restored faces."""
        check_no_reference(self, reference)
        h, w = images.shape[-2:]
        x = images
        if (h, w) != (self.face_size, self.face_size):
            x = F.interpolate(x, size=(self.face_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        out, _ = self.net_ema(x * 2 - 1)
        out = ((out + 1) / 2).clamp(0, 1)
        if (h, w) != (self.face_size, self.face_size):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return out

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        clean = self.faces(batch)
        lq = self.degrade(clean)
        return {"degraded": lq, "restored": self.translate(lq), "clean": clean}
