"""GFP-GAN, clean form (Wang et al., CVPR 2021; REFERENCE 5): our implementation of `GFPGANv1Clean`.

A U-Net removes degradations; its bottleneck gives a W+ latent (one w per decoder layer, through one
linear layer: the decoder's mapping MLP is skipped) and its decoder side gives, per resolution, the
scale and shift of a channel-split spatial feature transform (CS-SFT) applied inside a StyleGAN2
decoder after the first conv of each resolution. Each U-Net level also has a toRGB head whose images
are the targets of the pyramid loss.

The module tree mirrors the official one, so `state_dict()` keys, shapes and buffers equal those of
`GFPGANv1Clean` (tests check it against the installed `gfpgan` package) and the released v1.3/v1.4
checkpoints load strictly: `TRANSLATORS.create("gfpgan-clean", weights="gfpgan-v1.4")`.

[decision] Constructor defaults are the released configuration (512 px, channel multiplier 2,
different_w, input_is_latent, sft_half), not the reference class's defaults (multiplier 1, ...),
so a hub name is enough to build the released network.
[decision] `randomize_noise=False` by default (the reference's True makes inference stochastic):
the stored noise buffers are used and the output is a deterministic function of the input.
[decision] With `input_is_latent` (as released) the decoder's mapping MLP never runs; its weights stay
in the state dict (checkpoints hold them) but are frozen, so no optimizer or DDP sees unused
parameters. The reference's `decoder_load_path`/`fix_decoder` are not options: freezing the decoder
is the method's choice (`requires_grad_`), and a decoder is loaded as part of a full state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge import hub
from taskbridge.bounds import PositiveFloat, PositiveInt
from taskbridge.modules.stylegan2 import StyleGAN2Generator, log2_size, stylegan2_channels
from taskbridge.registry import TRANSLATORS
from taskbridge.state_dicts import load_prefixed, unwrap_state


class ResBlock(nn.Module):
    """conv3x3-LReLU-bilinear x`scale`-conv3x3-LReLU, plus a bilinear-resized 1x1 conv skip."""

    def __init__(self, in_channels: int, out_channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resize(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.leaky_relu(self.conv2(self._resize(out)), 0.2)
        return out + self.skip(self._resize(x))


class SFTDecoder(StyleGAN2Generator):
    """StyleGAN2 decoder whose features are scaled and shifted after the first conv of each level.

    CS-SFT: with `sft_half` only the second half of the channels is transformed,
    F = concat(F1, alpha * F2 + beta) (alpha, not 1 + alpha, as in the reference); otherwise all are.
    """

    def __init__(self, out_size: int, num_style_feat: int, num_mlp: int, channel_multiplier: float,
                 narrow: float, sft_half: bool) -> None:
        super().__init__(out_size, num_style_feat, num_mlp, channel_multiplier, narrow)
        self.sft_half = sft_half

    def forward(self, latent: Tensor, conditions: list[tuple[Tensor, Tensor]],  # type: ignore[override]
                randomize_noise: bool = False) -> Tensor:
        """`latent` [B, num_latent, F]; `conditions[level] = (scale, shift)` for levels 8..out_size px."""

        def sft(level: int, feat: Tensor) -> Tensor:
            if level >= len(conditions):
                return feat
            scale, shift = conditions[level]
            if not self.sft_half:
                return feat * scale + shift
            same, rest = torch.split(feat, feat.shape[1] // 2, dim=1)
            return torch.cat([same, rest * scale + shift], dim=1)

        return self.synthesize(latent, randomize_noise, modulate=sft)


def _sft_head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, True),
                         nn.Conv2d(channels, out_channels, 3, 1, 1))


@TRANSLATORS.register("gfpgan-clean")
class GFPGANClean(nn.Module):
    """GFP-GAN v1 clean (U-Net + CS-SFT StyleGAN2 decoder); `forward(x) -> (image, pyramid rgbs)` in [-1, 1].

    `weights`: a hub name (`gfpgan-v1.3`, `gfpgan-v1.4`) or a checkpoint path, loaded strictly
    (`params_ema`, else `params`, else a plain state dict). Released 512 px config: 86.44 M parameters
    (84.34 M trainable: the unused mapping MLP is frozen).
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(
        self,
        out_size: PositiveInt = 512,
        num_style_feat: PositiveInt = 512,
        channel_multiplier: PositiveInt = 2,
        num_mlp: PositiveInt = 8,
        narrow: PositiveFloat = 1.0,
        sft_half: bool = True,
        different_w: bool = True,
        input_is_latent: bool = True,
        randomize_noise: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.log_size = log2_size(out_size)
        self.out_size, self.num_style_feat = out_size, num_style_feat
        self.different_w, self.input_is_latent, self.randomize_noise = different_w, input_is_latent, randomize_noise
        ch = stylegan2_channels(channel_multiplier, narrow * 0.5)  # the U-Net is half the decoder's width
        levels = [2**k for k in range(3, self.log_size + 1)]  # 8 .. out_size
        decoder_ch = stylegan2_channels(channel_multiplier, narrow)
        if any(decoder_ch[r] != 2 * ch[r] for r in levels):
            raise ValueError(f"narrow={narrow}, channel_multiplier={channel_multiplier}: decoder widths "
                             f"{[decoder_ch[r] for r in levels]} are not twice the U-Net widths {[ch[r] for r in levels]}, "
                             "which the SFT conditions need (use a power-of-two narrow)")

        # registration order follows the reference so even the state-dict order matches
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(ch[2**k], ch[2 ** (k - 1)], 0.5) for k in range(self.log_size, 2, -1))
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(ResBlock(ch[r // 2], ch[r], 2.0) for r in levels)
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[r], 3, 1) for r in levels)
        n_latent = (2 * self.log_size - 2) if different_w else 1
        self.final_linear = nn.Linear(ch[4] * 4 * 4, n_latent * num_style_feat)
        self.stylegan_decoder = SFTDecoder(out_size, num_style_feat, num_mlp, channel_multiplier, narrow, sft_half)
        sft_out = {r: ch[r] if sft_half else 2 * ch[r] for r in levels}
        self.condition_scale = nn.ModuleList(_sft_head(ch[r], sft_out[r]) for r in levels)
        self.condition_shift = nn.ModuleList(_sft_head(ch[r], sft_out[r]) for r in levels)

        if input_is_latent:
            self.stylegan_decoder.style_mlp.requires_grad_(False)
        if weights is not None:
            load_gfpgan_state(self, weights)

    def forward(self, x: Tensor, *, randomize_noise: bool | None = None) -> tuple[Tensor, list[Tensor]]:
        """x [B, 3, out_size, out_size] in [-1, 1] -> (restored image, toRGB outputs at 8 .. out_size px).

        The image is not clamped (the reference's neither); `randomize_noise` overrides the constructor's.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.out_size, self.out_size):
            raise ValueError(f"GFP-GAN takes [B, 3, {self.out_size}, {self.out_size}] images in [-1, 1] "
                             f"(aligned faces of its out_size); got {tuple(x.shape)}")
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips: list[Tensor] = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)

        style = self.final_linear(feat.flatten(1))
        if self.different_w:
            style = style.view(style.shape[0], -1, self.num_style_feat)
        latent = self.stylegan_decoder.latents(style, self.input_is_latent)

        conditions: list[tuple[Tensor, Tensor]] = []
        rgbs: list[Tensor] = []
        for i, skip in enumerate(reversed(skips)):
            feat = self.conv_body_up[i](feat + skip)
            conditions.append((self.condition_scale[i](feat), self.condition_shift[i](feat)))
            rgbs.append(self.toRGB[i](feat))

        noise = self.randomize_noise if randomize_noise is None else randomize_noise
        return self.stylegan_decoder(latent, conditions, randomize_noise=noise), rgbs


def load_gfpgan_state(model: nn.Module, name_or_path: str | Path) -> None:
    """Load GFP-GAN weights (hub name or file) into `model` strictly, safely (weights_only)."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in hub.weight_names():
        path = hub.resolve(str(name_or_path))  # so the messages name the file, not only the hub name
    where = f"GFP-GAN weights {path}"
    # `params_ema` first: what the releases and the reference's inference use; values loaded unchanged
    load_prefixed(model, unwrap_state(hub.load_state(path), where, keys=("params_ema", "params")), where, flush=False)
