"""Anti-aliased resampling layers against their reference definitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskbridge.modules.layers import BlurPool2d, BlurUpsample2d


def test_blur_upsample_equals_reference_transposed_blur() -> None:
    """The [1,3,3,1] transposed blur with replicate borders is half-pixel bilinear x2."""
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 4
    k2 = torch.outer(k1, k1).expand(3, 1, 4, 4)
    ref = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, stride=2, padding=3, groups=3)
    torch.testing.assert_close(BlurUpsample2d()(x), ref)


def test_blur_pool_by_hand() -> None:
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64)
    y = BlurPool2d(2)(x)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    w = torch.outer(k, k) / 16
    expect = torch.empty(1, 2, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            expect[0, :, i, j] = (xp[0, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * w).sum((-1, -2))
    torch.testing.assert_close(y, expect)
    assert y.shape[-2:] == (3, 3)
