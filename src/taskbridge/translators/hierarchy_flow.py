"""Hierarchy Flow (Fan, Chen & Liu; REFERENCE 3): an invertible translator of hierarchical coupling blocks.

Forward (Alg. 1), block of C channels and expansion n: a = AffineNet(x) >= 0 split a_1..a_n,
h_i = x - (a_1 + ... + a_i), y = concat(h_1..h_n) (nC channels). Reverse (Alg. 2), blocks in reverse
order: y <- AdaIN(y, mu, sigma) with mu, sigma from the block's MLP on the 8-dim Style-Net code, then
the splits are fused back with the learnable weight alpha. Every fusion form is a linear combination
x = sum_i wy_i * y_i + sum_i wa_i * a_i whose weights depend only on alpha, so the reverse is computed
in closed form (one weighted sum, with AdaIN folded into its per-channel scale) instead of the
reference's loop of slices; the results are equal (tests/translators/test_hierarchy_flow.py):

* `paper` (default): h_n = y_n + a_n, h_i = alpha (y_i + a_i) + (1 - alpha) h_{i+1}, x = h_1;
  the exact inverse of the forward pass when alpha = 1 and AdaIN is off.
* `official` (the public code): h_i = alpha (h_{i+1} + y_i) + (1 - alpha) a_i; never an exact inverse.
* `exact` (ours, beyond the paper): x = sum_i w_i (y_i + a_1 + ... + a_i) with the paper's weights w_i,
  the exact inverse for every alpha when AdaIN is off.

`forward(x) -> (y, aux)` and `reverse(y, aux, style)` are pure: nothing is cached between them (the
reference's `reverse` reads the affine features its last `forward` stored). `style=None` turns AdaIN
off. Images live in [0, 1]; the input is reflection-padded by `pad_size` and cropped back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.bounds import PositiveInt
from taskbridge.modules.adain import adain_affine
from taskbridge.modules.layers import InstanceNorm2d
from taskbridge.registry import TRANSLATORS

#: expansion rates of the paper's variants (Sec. 4.1); channels grow 3 -> 3n_1 -> 3n_1n_2 ...
VARIANTS: dict[str, tuple[int, ...]] = {"hf": (10, 4), "hf+": (4, 5, 2), "hf++": (10, 4, 4), "hf-dagger": (10, 4, 4, 4)}
ReverseForm = Literal["paper", "official", "exact"]


def affine_net(channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 C->2C, IN, ReLU, Conv3x3 2C->2C, IN, ReLU, Conv3x3 2C->nC, ReLU (so a >= 0)."""
    mid = 2 * channels
    return nn.Sequential(
        nn.Conv2d(channels, mid, 3, padding=1), InstanceNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, padding=1), InstanceNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 3, padding=1), nn.ReLU(inplace=True),
    )


def style_net(style_dim: int = 8, width: int = 64) -> nn.Sequential:
    """MUNIT's style encoder without normalisation: 7x7 conv, two stride-2 4x4 convs, global pool, 1x1 conv."""
    pad = {"padding_mode": "reflect"}
    return nn.Sequential(
        nn.Conv2d(3, width, 7, padding=3, **pad), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 4, 2, padding=1, **pad), nn.ReLU(inplace=True),
        nn.Conv2d(2 * width, 4 * width, 4, 2, padding=1, **pad), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(4 * width, style_dim, 1),
    )


def fusion_weights(alpha: Tensor, n: int, form: ReverseForm) -> tuple[Tensor, Tensor]:
    """(wy, wa) [n]: the reverse coupling of `form` as x = sum_i wy_i y_i + sum_i wa_i a_i."""
    i = torch.arange(n, device=alpha.device, dtype=alpha.dtype)
    if form == "official":
        wy = torch.where(i < n - 1, alpha ** (i + 1), alpha ** (n - 1))
        wa = torch.where(i < n - 1, alpha**i * (1 - alpha), alpha ** (n - 1))
        return wy, wa
    w = torch.where(i < n - 1, alpha * (1 - alpha) ** i, (1 - alpha) ** (n - 1))
    if form == "paper":
        return w, w
    return w, w.flip(0).cumsum(0).flip(0)  # exact: a_j is weighted by the sum of w_i over i >= j


class HierarchicalCoupling(nn.Module):
    """One block: C channels in, expansion n, nC out; its MLP maps the style code to AdaIN's mean and std."""

    def __init__(self, channels: int, expansion: int, style_dim: int = 8, reverse: ReverseForm = "paper",
                 alpha: float = 0.5, learn_alpha: bool = True) -> None:
        super().__init__()
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        self.channels, self.expansion, self.form = channels, expansion, reverse
        out = channels * expansion
        self.affine_net = affine_net(channels, out)
        self.style_mlp = nn.Sequential(nn.Linear(style_dim, 3 * out), nn.ReLU(inplace=True),
                                       nn.Linear(3 * out, 3 * out), nn.ReLU(inplace=True), nn.Linear(3 * out, 2 * out))
        value = torch.tensor(float(alpha))
        if learn_alpha:
            self.alpha = nn.Parameter(value)
        else:
            self.register_buffer("alpha", value)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C, H, W] -> (y [B, nC, H, W], a [B, nC, H, W]) with y_i = x - (a_1 + ... + a_i)."""
        a = self.affine_net(x)
        b, n = x.shape[0], self.expansion
        lower = torch.ones(n, n, device=x.device, dtype=x.dtype).tril().expand(b, n, n)
        # every y_i in one pass: x broadcast over the splits minus (lower-triangular ones) @ a
        y = torch.baddbmm(x.reshape(b, 1, -1), lower, a.view(b, n, -1), alpha=-1)
        return y.view_as(a), a

    def style_stats(self, code: Tensor) -> tuple[Tensor, Tensor]:
        """Style code [B, D] -> AdaIN mean and std [B, nC] (std unconstrained, as published)."""
        mean, std = self.style_mlp(code).chunk(2, dim=1)
        return mean, std

    def reverse(self, y: Tensor, a: Tensor, code: Tensor | None) -> Tensor:
        """AdaIN (skipped when `code` is None) then the fusion back to C channels, in one weighted sum."""
        b, nc, h, w = y.shape
        n = self.expansion
        wy, wa = fusion_weights(self.alpha, n, self.form)
        # sums over the splits as [B, 1, n] @ [B, n, C*H*W] products: contiguous views, no copies
        fused_a = torch.bmm(wa.expand(b, 1, n), a.view(b, n, -1))
        if code is None:
            x = torch.baddbmm(fused_a, wy.expand(b, 1, n), y.view(b, n, -1))
        else:
            mean, std = self.style_stats(code)
            scale, shift = adain_affine(y, mean, std)  # AdaIN as a per-channel affine map [B, nC]
            scaled = y * (scale.view(b, n, -1) * wy[:, None]).view(b, nc, 1, 1)
            x = fused_a + scaled.view(b, n, -1).sum(1, keepdim=True)
            x = x.view(b, -1, h, w) + (shift.view(b, n, -1) * wy[:, None]).sum(1)[..., None, None]
        return x.view(b, -1, h, w)


@TRANSLATORS.register("hierarchy-flow")
class HierarchyFlow(nn.Module):
    """Hierarchy Flow: `translate(content, code)`; `style_code(images)` encodes a reference image."""

    value_range = (0.0, 1.0)

    def __init__(self, variant: str = "hf", expansions: Sequence[PositiveInt] | None = None, in_channels: int = 3,
                 pad_size: int = 10, style_dim: int = 8, style_width: int = 64, reverse: ReverseForm = "paper",
                 alpha: float = 0.5, learn_alpha: bool = True) -> None:
        super().__init__()
        if expansions is None:
            if variant not in VARIANTS:
                raise ValueError(f"unknown Hierarchy Flow variant '{variant}'; known: {', '.join(VARIANTS)}")
            expansions = VARIANTS[variant]
        self.expansions = tuple(int(e) for e in expansions)
        self.style_dim = int(style_dim)
        self.pad_size = int(pad_size)
        self.min_size = self.pad_size + 1  # reflection padding needs sides longer than the pad
        channels = [in_channels]
        for e in self.expansions:
            channels.append(channels[-1] * e)
        self.channels = channels
        self.blocks = nn.ModuleList(
            HierarchicalCoupling(c, e, style_dim, reverse, alpha, learn_alpha) for c, e in zip(channels[:-1], self.expansions, strict=True)
        )
        self.style_net = style_net(style_dim, style_width)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Padded input through every block: (y, affine features of each block)."""
        p = self.pad_size
        y = F.pad(x, (p, p, p, p), mode="reflect") if p else x
        aux = []
        for block in self.blocks:
            y, a = block(y)
            aux.append(a)
        return y, aux

    def reverse(self, y: Tensor, aux: Sequence[Tensor], style: Tensor | None = None) -> Tensor:
        """Blocks in reverse order with AdaIN from style code [B, D] (None: AdaIN off), padding cropped."""
        for block, a in zip(reversed(self.blocks), reversed(aux), strict=True):
            y = block.reverse(y, a, style)
        p = self.pad_size
        return y[..., p:y.shape[-2] - p, p:y.shape[-1] - p] if p else y

    def style_code(self, images: Tensor) -> Tensor:
        """Reference images [B, 3, H, W] in [0, 1] -> style codes [B, D]."""
        return self.style_net(images).flatten(1)

    def translate(self, content: Tensor, style: Tensor | None) -> Tensor:
        """Content [B, 3, H, W] rendered with style code [B, D] (or [1, D], broadcast)."""
        if style is not None and style.shape[0] != content.shape[0]:
            style = style.expand(content.shape[0], -1)
        y, aux = self(content)
        return self.reverse(y, aux, style)


_OFFICIAL_KEYS = (
    (r"^blocks\.(\d+)\.style_mlp\.model\.(\d)\.fc\.", lambda m: f"blocks.{m[1]}.style_mlp.{2 * int(m[2])}."),
    (r"^blocks\.(\d+)\.fixed_weight$", lambda m: f"blocks.{m[1]}.alpha"),
    (r"^style_net\.model\.(\d)\.conv\.", lambda m: f"style_net.{2 * int(m[1])}."),
    (r"^style_net\.model\.4\.", lambda m: "style_net.7."),
)


def from_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of the public code's `HierarchyFlow` (model/network/hf.py) in our key layout.

    Lets runs trained with the official code be loaded here (its `weight_type: learned` or `fixed`).
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for pattern, repl in _OFFICIAL_KEYS:
            key, hits = re.subn(pattern, repl, key)
            if hits:
                break
        out[key] = value
    return out
