"""GFP-GAN's facial-component discriminator (REFERENCE 5): one per eye/eye/mouth crop.

A fixed VGG-style stack of StyleGAN2 ConvLayers (equalised learning rate, blur + stride-2 down):
64 -> 128 (/2) -> 128 -> 256 (/2) -> 256 -> 1-channel score map at 1/4 of the crop size. The
features after conv3 and conv5 feed GFP-GAN's Gram-matrix style loss on the components.
Attribute names follow GFP-GAN's `FacialComponentDiscriminator` (its checkpoints load by state
dict). 1.11 M parameters.
"""

from __future__ import annotations

from typing import Literal, overload

from torch import Tensor, nn

from taskbridge.discriminators.stylegan2 import ConvLayer
from taskbridge.registry import DISCRIMINATORS


@DISCRIMINATORS.register("facial-component")
class FacialComponentDiscriminator(nn.Module):
    """Eye/mouth crop [B, 3, H, W] in [-1, 1] -> logit map [B, 1, H/4, W/4] (+ features on request).

    `return_feats=True` also returns the features [B, 128, H/2, W/2] and [B, 256, H/4, W/4] (style loss).

    `forward(x, return_feats=True)` rather than a second method, so a DDP-wrapped copy works too.
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, 64, 3)
        self.conv2 = ConvLayer(64, 128, 3, downsample=True)
        self.conv3 = ConvLayer(128, 128, 3)
        self.conv4 = ConvLayer(128, 256, 3, downsample=True)
        self.conv5 = ConvLayer(256, 256, 3)
        self.final_conv = ConvLayer(256, 1, 3, bias=True, activate=False)

    @overload
    def forward(self, x: Tensor, return_feats: Literal[False] = ...) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, return_feats: Literal[True]) -> tuple[Tensor, list[Tensor]]: ...

    def forward(self, x: Tensor, return_feats: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"the facial-component discriminator takes [B, 3, H, W] crops with H, W multiples "
                             f"of 4; got {tuple(x.shape)}")
        mid = self.conv3(self.conv2(self.conv1(x)))
        deep = self.conv5(self.conv4(mid))
        out = self.final_conv(deep)
        return (out, [mid, deep]) if return_feats else out
