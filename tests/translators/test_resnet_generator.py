"""ResNet generator (CycleGAN / anti-aliased CUT) and PatchGAN: sizes, taps, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskbridge.discriminators.patchgan import PatchGAN
from taskbridge.registry import TRANSLATORS
from taskbridge.translators.resnet_generator import CUT_TAPS, ResnetGenerator


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_counts() -> None:
    """REFERENCE 2.1/4: G 11.378 M (both variants), D 2.765 M; computed once at full size."""
    assert n_params(ResnetGenerator(ngf=64, n_blocks=9, antialias=False)) == 11_378_179
    assert n_params(ResnetGenerator(ngf=64, n_blocks=9, antialias=True)) == 11_378_179
    assert n_params(PatchGAN(ndf=64, antialias=False)) == 2_764_737
    assert n_params(PatchGAN(ndf=64, antialias=True)) == 2_764_737


@pytest.mark.parametrize("antialias", [False, True])
def test_generator_shapes_and_named_taps(antialias: bool) -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2, antialias=antialias)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    taps = ["pad_in", "down1_conv", "down2_conv", "block1", "block2"]
    y, feats = g.forward_with_taps(x, taps)
    assert y.shape == x.shape and y.abs().max() <= 1
    torch.testing.assert_close(y, g(x))
    # taps are the named layers whatever the resampling: down1_conv is at H with anti-aliasing
    # (stride-1 conv before the blur-pool), at H/2 without
    s1 = 32 if antialias else 16
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(3, 38, 38), (16, s1, s1), (32, s1 // 2, s1 // 2), (32, 8, 8), (32, 8, 8)]
    assert [g.tap_channels[t] for t in taps] == [3, 16, 32, 32, 32]
    for a, b in zip(g.encode(x, taps), feats, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(feats[0], F.pad(x, (3, 3, 3, 3), mode="reflect"))


def test_generator_errors_name_the_problem() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2)
    with pytest.raises(ValueError, match="block5"):
        g.encode(torch.zeros(1, 3, 32, 32), CUT_TAPS)
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.zeros(1, 3, 30, 32))


def test_registry_builds_resnet_generator() -> None:
    g = TRANSLATORS.create("resnet-generator", ngf=8, n_blocks=2, antialias=True, norm="instance")
    assert isinstance(g, ResnetGenerator)
    with pytest.raises(TypeError, match="bogus"):
        TRANSLATORS.create("resnet-generator", bogus=1)
