"""Hierarchy Flow (REFERENCE 3): unpaired content/style training of the invertible translator.

Each step renders a content image of domain A with the style code of a random image of domain B
(the unpaired loader pairs them at random) and minimises L = L_c + lambda * L_as (content loss on
relu4_1, aligned-style loss with k on the style layers) on a frozen feature network. The published
code clamps the output to [0, 1] before the loss, which gives zero gradient to every pixel outside;
here the loss sees the raw output (`clamp_output: true` restores the published behaviour).

Inference: `translate(content, reference=style)`; without a reference the style is the mean style
code of domain B (`style_mean`, a running mean of the codes seen in training, saved in every
checkpoint), so `evaluate --translator` and `translate` work without a style image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, Unit
from taskbridge.losses.style_content import aligned_style_loss, content_loss
from taskbridge.methods.base import Method
from taskbridge.methods.common import build_network, unpaired_inputs
from taskbridge.registry import FEATURES, METHODS, TRANSLATORS

TRANSLATOR = {"type": "hierarchy-flow", "variant": "hf", "reverse": "paper"}
#: offline default; `{type: vgg19}` is the paper's network (weights downloaded once, see docs/weights.md)
FEATURE_NET = {"type": "vgg16-shift-tolerant"}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # the public code's; the paper lists relu1_1-relu3_1


@METHODS.register("hierarchy-flow")
class HierarchyFlowMethod(Method):
    """Hierarchy Flow: invertible content-preserving translation with AdaIN style and aligned-style loss."""

    inference_modules = ("net",)
    frozen_modules = ("features",)
    uses_reference = True

    def __init__(
        self,
        translator: dict[str, Any] | None = None,
        features: dict[str, Any] | None = None,
        k: Unit = 0.8,
        style_weight: NonNegativeFloat = 0.1,
        content_layer: str = "relu4_1",
        style_layers: Sequence[str] = STYLE_LAYERS,
        clamp_output: bool = False,
        style_momentum: Unit = 0.99,
    ) -> None:
        super().__init__()
        if not 0 < k <= 1:
            raise ValueError(f"hierarchy-flow: k must be in (0, 1], got {k}")
        self.net = build_network(TRANSLATORS, translator, TRANSLATOR, "method.translator")
        self.features = build_network(FEATURES, features, FEATURE_NET, "method.features")
        self.features.requires_grad_(False)
        self.k, self.style_weight = float(k), float(style_weight)
        self.content_layer, self.style_layers = content_layer, list(style_layers)
        self.features.check_layers([content_layer, *self.style_layers])  # unknown layer names fail here
        self.clamp_output, self.momentum = bool(clamp_output), float(style_momentum)
        self.min_size = int(getattr(self.net, "min_size", 1))
        self.register_buffer("style_mean", torch.zeros(self.net.style_dim))
        self.register_buffer("style_seen", torch.zeros((), dtype=torch.long))

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"G": list(self.net.parameters())}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"G": {"type": "adam", "lr": 1e-4}}  # the public config (the paper: 1e-5), cosine to 0

    @torch.no_grad()
    def _track_style(self, codes: Tensor) -> None:
        """Running mean of domain B's style codes: exact while fewer than 1 / (1 - momentum) batches, then EMA."""
        self.style_seen += 1
        rate = max(1.0 / float(self.style_seen), 1.0 - self.momentum)
        self.style_mean.lerp_(codes.mean(0).to(self.style_mean.dtype), rate)

    def losses(self, content: Tensor, style: Tensor, out: Tensor) -> dict[str, Tensor]:
        """Content and aligned-style terms of a rendered batch (features of the targets without gradient)."""
        if self.clamp_output:
            out = out.clamp(0, 1)
        names = [*self.style_layers, self.content_layer]
        with torch.no_grad():
            content_feat = self.features(content, [self.content_layer])[0]
            style_feats = self.features(style, self.style_layers)
        out_feats = self.features(out, names)
        loss_c = content_loss(out_feats[-1], content_feat)
        loss_s = aligned_style_loss(out_feats[:-1], style_feats, self.k)
        return {"content": loss_c, "style": loss_s, "total": loss_c + self.style_weight * loss_s}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        content, style = unpaired_inputs(batch, "HierarchyFlow", (0.0, 1.0))
        codes = self.net.style_code(style)
        out = self.net.translate(content, codes)
        self._track_style(codes.detach())
        terms = self.losses(content, style, out)
        return {"loss/G": terms["total"], "G/content": terms["content"].detach(), "G/style": terms["style"].detach(),
                "G/alpha": torch.stack([b.alpha.detach() for b in self.net.blocks]).mean()}

    def default_style(self, batch: int) -> Tensor:
        if int(self.style_seen) == 0:
            raise ValueError("this Hierarchy Flow model has seen no style image yet (untrained): pass --reference IMG")
        return self.style_mean.expand(batch, -1)

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        code = self.net.style_code(reference) if reference is not None else self.default_style(images.shape[0])
        if code.shape[0] != images.shape[0]:
            code = code.mean(0, keepdim=True)  # several references: their mean style
        return self.net.translate(images, code).clamp(0, 1)

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        content, style = unpaired_inputs(batch, "HierarchyFlow", (0.0, 1.0))
        out = {"content": content, "style": style, "translated": self.translate(content, style)}
        if int(self.style_seen):
            out["translated_mean_style"] = self.translate(content)
        return out
