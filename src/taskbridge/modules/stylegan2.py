"""StyleGAN2 generator blocks, "clean" form (REFERENCE 5): plain PyTorch, no custom CUDA ops.

Why a clean form: the official StyleGAN2 ops (upfirdn2d, fused leaky ReLU) need a compiled CUDA
extension that often fails to build (GFPGAN #410, #508); the clean form resamples with bilinear
interpolation and folds the equalised-learning-rate scales and activation gains into the stored
weights, so it runs on any device and loads GFP-GAN v1.3/v1.4 checkpoints by state dict.

The attribute names are those of the public clean checkpoints (`style_mlp.{1,3,..}`,
`constant_input.weight`, `style_conv1`, `to_rgb1`, `style_convs.{i}`, `to_rgbs.{i}`,
`noises.noise{i}`), which is what makes the weights load strictly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: a feature transform applied after the first conv of resolution level `level` (8 px is level 0)
LevelModulation = Callable[[int, Tensor], Tensor]


def stylegan2_channels(channel_multiplier: float = 2, narrow: float = 1.0) -> dict[int, int]:
    """Feature channels per resolution: 512 up to 32 px, then halving (times the multiplier)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(ch * narrow) for res, ch in base.items()}


def log2_size(out_size: int) -> int:
    """log2 of a power-of-two output size in [8, 1024]; anything else is an error naming it."""
    if out_size < 8 or out_size > 1024 or out_size & (out_size - 1):
        raise ValueError(f"out_size must be a power of two in [8, 1024], got {out_size}")
    return out_size.bit_length() - 1


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear x2 (half-pixel centres): the clean replacement of StyleGAN2's [1,3,3,1] FIR upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class NormStyleCode(nn.Module):
    """Pixel norm of the style code over its feature axis (the last one).

    [decision] The reference normalises over dim 1, which for a W+ code [B, L, F] is the layer axis;
    that only differs when W+ codes go through the mapping MLP (GFP-GAN with `input_is_latent=False`
    and `different_w=True`), which no released checkpoint uses.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=-1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by an affine map of the style, then
    (optionally) demodulated so every output channel has unit expected variance (eps 1e-8).

    [decision] Per-sample weights run as one grouped convolution (the reference's "fused" form)
    rather than scaling activations before and after a shared conv: it gives the reference's
    numbers to float rounding, which is what the checkpoint-equivalence test relies on.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.modulation = nn.Linear(num_style_feat, in_channels)
        # the clean checkpoints' init: unit-gain fan-in normal, bias 1 (styles start at identity)
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c = x.shape[:2]
        weight = self.weight * self.modulation(style).view(b, 1, c, 1, 1)  # (b, c_out, c_in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        if self.upsample:
            x = upsample2x(x)
        h, w = x.shape[2:]
        weight = weight.view(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.kernel_size // 2, groups=b)
        return out.view(b, self.out_channels, *out.shape[2:])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")


class StyleConv(nn.Module):
    """Modulated 3x3 conv, x sqrt(2) (the folded activation gain), + learned-strength noise, + bias, LReLU 0.2.

    `weight` is the noise strength (a scalar, zero at init) and `bias` the per-channel bias, as named
    in the clean checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        """`noise` [1 or B, 1, H, W]; None draws fresh N(0, 1) noise (stochastic output)."""
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        out = out + self.weight * noise
        return F.leaky_relu(out + self.bias, 0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias, added to the upsampled previous RGB (skip)."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (upsample2x(skip) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2Generator(nn.Module):
    """Clean StyleGAN2 synthesis network with its 8-layer mapping MLP.

    Per resolution 8..out_size: an upsampling StyleConv, a StyleConv, a ToRGB whose output is added
    to the upsampled RGB of the level below. One w per layer (W+): `num_latent = 2 log2(out_size) - 2`
    styles, used as style_conv1 <- w0, to_rgb1 <- w1, and per level l: conv1 <- w(2l+1),
    conv2 <- w(2l+2), to_rgb <- w(2l+3) (the to_rgb shares its w with the next level's conv1).

    Noise: `noises.noise{i}` are fixed buffers (saved with the weights); `randomize_noise=False` uses
    them, so the output is a deterministic function of the input.
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: float = 2, narrow: float = 1.0) -> None:
        super().__init__()
        self.log_size = log2_size(out_size)
        self.num_style_feat = num_style_feat
        self.num_layers = 2 * (self.log_size - 2) + 1  # style convs, one noise each
        self.num_latent = 2 * self.log_size - 2
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            linear = nn.Linear(num_style_feat, num_style_feat)
            nn.init.kaiming_normal_(linear.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            mlp += [linear, nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)

        self.channels = ch = stylegan2_channels(channel_multiplier, narrow)
        self.constant_input = ConstantInput(ch[4], size=4)
        self.style_conv1 = StyleConv(ch[4], ch[4], num_style_feat)
        self.to_rgb1 = ToRGB(ch[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))
        cin = ch[4]
        for k in range(3, self.log_size + 1):
            cout = ch[2**k]
            self.style_convs.append(StyleConv(cin, cout, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, num_style_feat))
            self.to_rgbs.append(ToRGB(cout, num_style_feat, upsample=True))
            cin = cout

    def stored_noise(self) -> list[Tensor]:
        """The fixed noise maps, one per style conv."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def latents(self, styles: Tensor, input_is_latent: bool = False) -> Tensor:
        """[B, F] (one w for all layers) or [B, num_latent, F] (W+) -> [B, num_latent, F]; z goes
        through the mapping MLP unless `input_is_latent`."""
        if not input_is_latent:
            styles = self.style_mlp(styles)
        if styles.ndim == 2:
            styles = styles.unsqueeze(1).expand(-1, self.num_latent, -1)
        if styles.shape[1:] != (self.num_latent, self.num_style_feat):
            raise ValueError(f"styles must be [B, {self.num_style_feat}] or [B, {self.num_latent}, "
                             f"{self.num_style_feat}], got {tuple(styles.shape)}")
        return styles

    def synthesize(self, latent: Tensor, randomize_noise: bool = False,
                   modulate: LevelModulation | None = None) -> Tensor:
        """W+ latent [B, num_latent, F] -> image [B, 3, out_size, out_size]; `modulate(level, feat)`
        transforms the features after the first conv of each level (GFP-GAN's CS-SFT)."""
        noise: list[Tensor | None] = [None] * self.num_layers if randomize_noise else list(self.stored_noise())
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[i - 1](out, latent[:, i], noise[i])
            if modulate is not None:
                out = modulate(level, out)
            out = self.style_convs[i](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip

    def forward(self, styles: Tensor, input_is_latent: bool = False, randomize_noise: bool = False) -> Tensor:
        return self.synthesize(self.latents(styles, input_is_latent), randomize_noise)
