"""Perceptual and Gram-style losses on a frozen feature network (BasicSR's `PerceptualLoss`, GFP-GAN's setting).

Per layer l with weight w_l: ``percep = pw * sum_l w_l * L1(F_l(out), F_l(ref))`` and
``style = sw * sum_l w_l * L1(G(F_l(out)), G(F_l(ref)))``, Gram ``G(F) = F F^T / (c h w)``. GFP-GAN
(`train_gfpgan_v1.yml`): VGG-19 conv1_2 0.1, conv2_2 0.1, conv3_4 1, conv4_4 1, conv5_4 1, perceptual
weight 1, style weight 50, criterion l1; these are the defaults here.

[decision] Our feature networks (`taskbridge.features`) expose ReLU outputs only, while BasicSR taps the
conv outputs *before* their ReLU. We use the ReLU of the same conv (``convX_Y -> reluX_Y``): the
negative pre-activations are not compared, so magnitudes (and the balance of the weights 1 / 50) are
not exactly the reference's. Layer maps per network (`GFPGAN_LAYERS`):

- ``vgg19`` (the paper's): relu1_2 .1, relu2_2 .1, relu3_4 1, relu4_4 1, relu5_4 1. Needs the
  downloaded torchvision weights and a VGG-19 layout that reaches block 5.
- ``vgg16-shift-tolerant`` (offline, the default here): the same blocks' last convs, relu1_2 .1,
  relu2_2 .1, relu3_3 1, relu4_3 1, relu5_3 1 (VGG-16 has three convs in blocks 3-5).

Images are in [0, 1] (the feature network normalises them; GFP-GAN's `range_norm` maps [-1, 1] to
[0, 1] first, the same thing). The reference image's features carry no gradient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat
from taskbridge.config import ConfigError, build
from taskbridge.registry import FEATURES, LOSSES

FEATURE_NET = {"type": "vgg16-shift-tolerant"}
GFPGAN_LAYERS: dict[str, dict[str, float]] = {
    "vgg19": {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0},
    "vgg16-shift-tolerant": {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_3": 1.0, "relu4_3": 1.0, "relu5_3": 1.0},
}
"""GFP-GAN's conv1_2/conv2_2/conv3_4/conv4_4/conv5_4 weights mapped onto each VGG's ReLU taps."""


def gram_matrix(feat: Tensor) -> Tensor:
    """[B, C, C] Gram matrix of [B, C, H, W] features, normalised by C H W (BasicSR)."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def _criterion(name: str) -> Any:
    return F.l1_loss if name == "l1" else F.mse_loss


def perceptual_term(out_feats: Sequence[Tensor], ref_feats: Sequence[Tensor], weights: Sequence[float],
                    criterion: str = "l1") -> Tensor:
    """sum_l w_l * criterion(out_l, ref_l) (the reference side detached)."""
    crit = _criterion(criterion)
    return sum(w * crit(o, r.detach()) for o, r, w in zip(out_feats, ref_feats, weights, strict=True))


def style_term(out_feats: Sequence[Tensor], ref_feats: Sequence[Tensor], weights: Sequence[float],
               criterion: str = "l1") -> Tensor:
    """sum_l w_l * criterion(Gram(out_l), Gram(ref_l)) (the reference side detached)."""
    crit = _criterion(criterion)
    return sum(w * crit(gram_matrix(o), gram_matrix(r.detach()))
               for o, r, w in zip(out_feats, ref_feats, weights, strict=True))


def _deepest(names: Sequence[str]) -> str | None:
    """The deepest 'reluX_Y' of `names` (None if any name is not of that form)."""
    found = [re.fullmatch(r"relu(\d+)_(\d+)", n) for n in names]
    if not names or not all(found):
        return None
    order = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    return names[order.index(max(order))]


def build_features(features: Mapping[str, Any] | nn.Module | None, layer_weights: Mapping[str, float] | None,
                   where: str = "loss perceptual.features") -> tuple[nn.Module, dict[str, float]]:
    """The frozen feature network and its layer weights (GFP-GAN's map for a known VGG when none are given)."""
    if isinstance(features, nn.Module):
        name = getattr(features, "name", None)
        weights = dict(layer_weights) if layer_weights is not None else GFPGAN_LAYERS.get(str(name))
        if weights is None:
            raise ConfigError(f"{where}: a feature module other than {', '.join(GFPGAN_LAYERS)} needs layer_weights")
        net = features
    else:
        section = dict(features) if features is not None else dict(FEATURE_NET)
        kind = section.get("type")
        weights = dict(layer_weights) if layer_weights is not None else GFPGAN_LAYERS.get(str(kind))
        if weights is None:
            raise ConfigError(f"{where}: feature network {kind!r} has no GFP-GAN layer map; give layer_weights "
                              f"(maps exist for {', '.join(GFPGAN_LAYERS)})")
        deepest = _deepest(list(weights))
        if kind in GFPGAN_LAYERS and "last" not in section and deepest is not None:
            section["last"] = deepest  # build the network only as deep as the loss reads
        try:
            net = build(FEATURES, section, where)
        except ValueError as err:
            raise ConfigError(f"{where}: {err} (layers asked: {', '.join(weights)}; pass layer_weights "
                              "the network has)") from None
    if not weights:
        raise ConfigError(f"{where}: layer_weights is empty")
    if hasattr(net, "check_layers"):
        net.check_layers(list(weights))
    net.requires_grad_(False)
    net.eval()
    return net, weights


@LOSSES.register("perceptual")
class PerceptualLoss(nn.Module):
    """Perceptual L1 + Gram style loss on a frozen feature network; `forward(out, ref) -> (percep, style)`.

    `features`: a FEATURES section (`{type: vgg19}`) or a module called as ``net(images, names)``;
    `layer_weights` default to GFP-GAN's map for that network (`GFPGAN_LAYERS`). A term whose weight is 0
    comes back as None (as BasicSR's).
    """

    def __init__(
        self,
        features: dict[str, Any] | nn.Module | None = None,
        layer_weights: dict[str, float] | None = None,
        perceptual_weight: NonNegativeFloat = 1.0,
        style_weight: NonNegativeFloat = 50.0,
        criterion: Literal["l1", "l2"] = "l1",
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "l2"):
            raise ValueError(f"perceptual: criterion must be l1 or l2, got {criterion!r}")
        self.features, self.layer_weights = build_features(features, layer_weights)
        self.perceptual_weight, self.style_weight = float(perceptual_weight), float(style_weight)
        self.criterion = criterion

    def train(self, mode: bool = True) -> PerceptualLoss:  # the feature network stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, out: Tensor, ref: Tensor) -> tuple[Tensor | None, Tensor | None]:
        names, weights = list(self.layer_weights), list(self.layer_weights.values())
        out_feats = self.features(out, names)
        with torch.no_grad():
            ref_feats = self.features(ref, names)
        percep = style = None
        if self.perceptual_weight > 0:
            percep = self.perceptual_weight * perceptual_term(out_feats, ref_feats, weights, self.criterion)
        if self.style_weight > 0:
            style = self.style_weight * style_term(out_feats, ref_feats, weights, self.criterion)
        return percep, style

    def extra_repr(self) -> str:
        return (f"layer_weights={self.layer_weights}, perceptual_weight={self.perceptual_weight}, "
                f"style_weight={self.style_weight}, criterion={self.criterion}")
