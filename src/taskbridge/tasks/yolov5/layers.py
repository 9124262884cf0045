"""YOLOv5 v6 building blocks, written from the published architecture (no vendored code).

Module and parameter names (`conv`, `bn`, `cv1`, `m.0`, ...) follow the public checkpoint layout so
the official weights load with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def same_padding(k: int, d: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 (odd kernels)."""
    return d * (k - 1) // 2 if d > 1 else k // 2


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, the basic YOLOv5 unit."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, same_padding(k, d) if p is None else p, groups=g, dilation=d,
                              bias=False)
        # YOLOv5 trains BN with eps=1e-3, momentum=0.03; the eps matters for eval outputs.
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def fused(self) -> FusedConv:
        """Inference copy: BN (eval mode, running statistics) folded into the convolution, activation in place."""
        act: nn.Module = nn.SiLU(inplace=True) if isinstance(self.act, nn.SiLU) else nn.Identity()
        return FusedConv(fuse_conv_bn_eval(self.conv, self.bn), act)


class FusedConv(nn.Module):
    """Conv2d (with the folded BN as bias) -> in-place activation; what `Conv.fused()` returns."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3, with a residual when shapes allow and `shortcut` is set."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convolutions: a bottleneck branch and a bypass branch, fused by a 1x1."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: three chained k x k max-pools (= pools of k, 2k-1, 3k-2)."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), dim=1))


class SeparableMaxPool2d(nn.Module):
    """Stride-1 'same' k x k max-pool as a row max then a column max over -inf padding.

    Max is exact, so this equals `nn.MaxPool2d(k, 1, k // 2)` bit for bit. The stock NCHW CPU kernel
    visits k * k inputs per output (and records argmax indices); these 2 (k - 1) vectorised maxima
    measured 10-30x faster on SPPF's maps (1 x 128 x 20 x 20, one thread). Inference path only.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if k % 2 == 0:
            raise ValueError(f"SeparableMaxPool2d needs an odd kernel, got {k}")
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        h, w, r = x.shape[-2], x.shape[-1], self.k // 2
        p = F.pad(x, (r, r, r, r), value=float("-inf"))
        rows = p[..., :, 0:w]
        for j in range(1, self.k):
            rows = torch.maximum(rows, p[..., :, j:j + w])
        out = rows[..., 0:h, :]
        for j in range(1, self.k):
            out = torch.maximum(out, rows[..., j:j + h, :])
        return out


class Concat(nn.Module):
    """Concatenate a list of feature maps along `dimension`."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, self.d)
