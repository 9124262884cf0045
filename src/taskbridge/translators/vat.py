"""VaT translator: gated fusion module (GFM, paper Eq. 5) + U-shaped transformation module (UTM).

Layout follows the official network (REFERENCE §1.1), reimplemented from its description:

* GFM (6-channel model only): concat[I_R, I_LQ] -> Conv3x3 6->w -> TB(w) -> Conv1x1 w->3 -> sigmoid
  gate g; I_F = (1 - g) * I_R + g * I_LQ, per pixel and per channel (the paper says one channel;
  ``gate_channels=1`` gives that variant). ``gate_pool="image"`` (beyond the paper) averages the gate's logits
  over the image: one weight per image and channel, a low-capacity fusion that can follow each photo's fog
  density but cannot fit per-pixel detail of a few training photos.
* UTM: Conv3x3 3->w, two down stages (Conv3x3 to half width + PixelUnshuffle 2, TB), two up stages
  (Conv3x3 to double width + PixelShuffle 2), one skip connection at H/2, Conv3x3 w->3.
  No global residual, clamp or output activation.

F_A (``in_channels=6`` / ``gated=True``) maps (restored, degraded) -> task-friendly image;
F_B (``in_channels=3`` / ``gated=False``) is the same UTM without GFM (Fig. 3), used by the
backward cycle. Parameter counts (ours, counted by the tests): width 16 -> GFM 5,225 + UTM
184,513 = 189,738 for F_A; the paper's "1.57 M" does not match its own code.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from taskbridge.registry import TRANSLATORS
from taskbridge.translators.restormer import TransformerBlock

GatePool = Literal["pixel", "image"]


class GatedFusion(nn.Module):
    """G_A: learns, per pixel, how much of the degraded input to keep where the restorer failed."""

    def __init__(self, width: int = 16, heads: int = 2, expansion: float = 2.66, gate_channels: int = 3,
                 pool: GatePool = "pixel") -> None:
        super().__init__()
        if gate_channels not in (1, 3):
            raise ValueError(f"gate_channels must be 1 or 3, got {gate_channels}")
        if pool not in get_args(GatePool):
            raise ValueError(f"gate_pool must be one of {', '.join(get_args(GatePool))}, got {pool!r}")
        self.pool = pool
        self.conv_in = nn.Conv2d(6, width, 3, padding=1)
        self.block = TransformerBlock(width, heads, expansion)
        self.conv_out = nn.Conv2d(width, gate_channels, 1)

    def gate(self, restored: Tensor, degraded: Tensor) -> Tensor:
        """Gate g in [0, 1]: weight of the *degraded* image."""
        x = torch.cat([restored, degraded], dim=1)
        logits = self.conv_out(self.block(self.conv_in(x)))
        if self.pool == "image":  # one weight per image and channel, broadcast back to the pixels
            logits = logits.mean(dim=(-2, -1), keepdim=True).expand_as(logits)
        return torch.sigmoid(logits)

    def forward(self, restored: Tensor, degraded: Tensor) -> tuple[Tensor, Tensor]:
        g = self.gate(restored, degraded)
        return (1 - g) * restored + g * degraded, g


class UTransform(nn.Module):
    """T_*: U-shaped transformer translator working at H, H/2, H/4 (inputs padded to a multiple of 4)."""

    multiple = 4

    def __init__(self, width: int = 16, heads: int = 2, expansion: float = 2.66, global_residual: bool = False,
                 out_init_std: float = 0.0) -> None:
        super().__init__()
        w = width
        self.global_residual = global_residual
        self.embed = nn.Conv2d(3, w, 3, padding=1)
        self.down1 = nn.Sequential(nn.Conv2d(w, w // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.enc1 = TransformerBlock(2 * w, heads, expansion)
        self.down2 = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.latent = TransformerBlock(4 * w, heads, expansion)
        self.up2 = nn.Sequential(nn.Conv2d(4 * w, 8 * w, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.reduce = nn.Conv2d(4 * w, 2 * w, 1)
        self.dec1 = TransformerBlock(2 * w, heads, expansion)
        self.up1 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.out = nn.Conv2d(w, 3, 3, padding=1)
        if w % 2:
            raise ValueError(f"VaT width must be even (pixel unshuffle of width/2 channels), got {w}")
        if global_residual:  # start at (or, with out_init_std > 0, next to) the identity: y = x + out(...)
            if out_init_std > 0:
                nn.init.normal_(self.out.weight, std=out_init_std)
            else:
                nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:  # any size works; pad like the image continues, crop back afterwards
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        e1 = self.enc1(self.down1(self.embed(x)))
        z = self.latent(self.down2(e1))
        d1 = self.dec1(self.reduce(torch.cat([self.up2(z), e1], dim=1)))
        y = self.out(self.up1(d1))
        if self.global_residual:
            y = y + x
        return y[..., :h, :w]


class VaTTranslator(nn.Module):
    """F_VaT: optional gated fusion followed by the U-shaped transformation module.

    ``forward(x)`` takes either a 6-channel tensor concat[restored, degraded] or
    ``forward(restored, degraded)`` (gated model), or a 3-channel image (ungated model).
    """

    value_range: tuple[float, float] = (0.0, 1.0)

    def __init__(
        self,
        in_channels: int | None = None,
        gated: bool | None = None,
        width: int = 16,
        heads: int = 2,
        expansion: float = 2.66,
        gate_channels: int = 3,
        global_residual: bool = False,
        out_init_std: float = 0.0,
        gate_pool: GatePool = "pixel",
    ) -> None:
        super().__init__()
        if gated is None:
            gated = in_channels != 3  # default: the 6-channel F_A
        if in_channels is None:
            in_channels = 6 if gated else 3
        if in_channels not in (3, 6) or gated != (in_channels == 6):
            raise ValueError(
                f"VaT translator: in_channels={in_channels} with gated={gated} is inconsistent; "
                "use in_channels=6/gated=True (F_A) or in_channels=3/gated=False (F_B)"
            )
        self.in_channels = in_channels
        self.gated = gated
        self.width = width
        self.fusion = GatedFusion(width, heads, expansion, gate_channels, gate_pool) if gated else None
        self.transform = UTransform(width, heads, expansion, global_residual, out_init_std)

    def fuse(self, restored: Tensor, degraded: Tensor) -> tuple[Tensor, Tensor]:
        """(I_F, gate). Without GFM, I_F is the restored image and the gate is zero."""
        if self.fusion is None:
            return restored, torch.zeros_like(restored[:, :1])
        return self.fusion(restored, degraded)

    def forward(self, x: Tensor, degraded: Tensor | None = None) -> Tensor:
        if self.fusion is None:
            if degraded is not None or x.shape[1] != 3:
                raise ValueError("ungated VaT translator (F_B) takes one 3-channel image")
            return self.transform(x)
        if degraded is None:
            if x.shape[1] != 6:
                raise ValueError(f"gated VaT translator expects concat[restored, degraded] (6 ch), got {x.shape[1]}")
            x, degraded = x[:, :3], x[:, 3:]
        return self.transform(self.fuse(x, degraded)[0])


@TRANSLATORS.register("vat")
def vat_translator(
    in_channels: int | None = None,
    gated: bool | None = None,
    width: PositiveInt = 16,
    heads: PositiveInt = 2,
    expansion: PositiveFloat = 2.66,
    gate_channels: int = 3,
    global_residual: bool = False,
    out_init_std: NonNegativeFloat = 0.0,
    gate_pool: GatePool = "pixel",
) -> VaTTranslator:
    """VaT translator: gated fusion + U-shaped Restormer transformer (width 16 = 0.19 M params).

    `out_init_std` > 0 (with `global_residual`) draws the last conv from N(0, std) instead of zeros: the
    start is still within ~std of the identity, but the inner layers get gradient from step 0 (with a
    zero last conv they get exactly none, and the identity is a fixed point of the cycle loss). `gate_pool`
    "image" makes the gate one weight per image and channel (the mean of its per-pixel logits)."""
    return VaTTranslator(in_channels, gated, width, heads, expansion, gate_channels, global_residual, out_init_std,
                         gate_pool)
