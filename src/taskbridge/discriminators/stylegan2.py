"""StyleGAN2 discriminator as GFP-GAN trains it (BasicSR `StyleGAN2Discriminator`, REFERENCE 5).

Equalised learning rate: weights are stored N(0, 1) and scaled by 1/sqrt(fan_in) at run time, so
Adam's per-parameter steps are uniform across layers. Downsampling is StyleGAN2's: a fixed
[1,3,3,1] x [1,3,3,1] / 64 blur (zero padding), then a stride-2 conv; leaky ReLUs carry a bias and
a sqrt(2) gain (BasicSR's "fused" leaky ReLU, here in plain PyTorch: no CUDA ops, double-backward
works for R1). Attribute names follow BasicSR so its discriminator checkpoints load by state dict.

Registered as discriminator `stylegan2`: input [B, 3, out_size, out_size] in [-1, 1], output [B, 1]
logits. 512 px: 24.0 M parameters at channel multiplier 1 (GFP-GAN's training config), 29.0 M at 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.bounds import PositiveFloat, PositiveInt
from taskbridge.modules.stylegan2 import log2_size, stylegan2_channels
from taskbridge.registry import DISCRIMINATORS


class Blur(nn.Module):
    """Depthwise [1,3,3,1] outer-product blur (sum 1) with zero padding `pad` (left/top, right/bottom)."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.pad = pad
        self.register_buffer("kernel", (torch.outer(k, k) / 64.0)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 4, 4), groups=c)


class EqualConv2d(nn.Module):
    """Conv2d with the equalised learning rate (weight N(0, 1) x 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class BiasLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) x sqrt(2): BasicSR's FusedLeakyReLU without the CUDA op."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.view(1, -1, *([1] * (x.ndim - 2)))
        return F.leaky_relu(x + bias, 0.2) * math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Linear with the equalised learning rate; `activate` adds BiasLeakyReLU's lrelu x sqrt(2)."""

    def __init__(self, in_features: int, out_features: int, activate: bool = False) -> None:
        super().__init__()
        self.activate = activate
        self.scale = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias)
        return F.leaky_relu(out, 0.2) * math.sqrt(2.0) if self.activate else out


class _ScaledLeakyReLU(nn.Module):
    """leaky_relu(x, 0.2) x sqrt(2), for a ConvLayer with activation but no bias."""

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class ConvLayer(nn.Sequential):
    """[Blur] - EqualConv2d (stride 2 after the blur when `downsample`) - [BiasLeakyReLU].

    The blur pads k + 1 pixels in all (split evenly), so blur + kxk stride-2 conv maps H to H/2.
    Without activation the conv keeps its own bias (`bias=True`); with it, the bias sits in the
    activation, as in BasicSR (hence the key names `<layer>.{0,1}.weight`, `<layer>.{1,2}.bias`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            pad = 2 + kernel_size - 1  # (len(kernel) - factor) + (k - 1)
            layers.append(Blur(((pad + 1) // 2, pad // 2)))
        stride, padding = (2, 0) if downsample else (1, kernel_size // 2)
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(BiasLeakyReLU(out_channels) if bias else _ScaledLeakyReLU())
        super().__init__(*layers)


class DownResBlock(nn.Module):
    """(conv3x3 -> blur + stride-2 conv3x3, + blur + stride-2 conv1x1 skip) / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group_size: int = 4, features: int = 1) -> Tensor:
    """Append the std over groups of samples (averaged over channels and pixels) as `features` maps.

    Samples b, b + B/G, b + 2B/G, ... form a group (the reference's grouping).
    [decision] The reference fails when the batch is not divisible by min(B, 4); we use the largest
    group size <= `group_size` that divides B (6 -> 3, 5 -> 1), the same as the reference whenever it
    runs. A group of 1 has zero variance and contributes the constant sqrt(1e-8).
    """
    b, c, h, w = x.shape
    group = max(g for g in range(1, min(b, group_size) + 1) if b % g == 0)
    y = x.view(group, -1, features, c // features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # [B/G, F, C/F, H, W]
    y = y.mean(dim=(2, 3, 4)).view(-1, features, 1, 1).repeat(group, 1, h, w)
    return torch.cat([x, y], dim=1)


@DISCRIMINATORS.register("stylegan2")
class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: [B, 3, out_size, out_size] in [-1, 1] -> [B, 1] logits.

    1x1 ConvLayer from RGB, residual down blocks to 4x4, minibatch stddev (group 4, 1 feature),
    3x3 ConvLayer, EqualLinear + lrelu, EqualLinear to one logit.
    [decision] Default channel multiplier 1: GFP-GAN's `train_gfpgan_v1.yml` (BasicSR's default is 2).
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self, out_size: PositiveInt = 512, channel_multiplier: PositiveInt = 1,
                 stddev_group: PositiveInt = 4, narrow: PositiveFloat = 1.0) -> None:
        super().__init__()
        log_size = log2_size(out_size)
        self.out_size, self.stddev_group, self.stddev_feat = out_size, stddev_group, 1
        ch = stylegan2_channels(channel_multiplier, narrow)
        body: list[nn.Module] = [ConvLayer(3, ch[out_size], 1)]
        body += [DownResBlock(ch[2**k], ch[2 ** (k - 1)]) for k in range(log_size, 2, -1)]
        self.conv_body = nn.Sequential(*body)
        self.final_conv = ConvLayer(ch[4] + self.stddev_feat, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activate=True), EqualLinear(ch[4], 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.out_size, self.out_size):
            raise ValueError(f"the stylegan2 discriminator takes [B, 3, {self.out_size}, {self.out_size}] images; "
                             f"got {tuple(x.shape)}")
        out = minibatch_stddev(self.conv_body(x), self.stddev_group, self.stddev_feat)
        return self.final_linear(self.final_conv(out).flatten(1))
