"""ResNet generator, PatchGAN, resampling layers, GAN losses, image pool and the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taskbridge.discriminators.image_pool import ImagePool
from taskbridge.discriminators.patchgan import PatchGAN
from taskbridge.losses.gan import discriminator_gan_loss, gan_loss, generator_gan_loss
from taskbridge.modules.layers import BlurPool2d, BlurUpsample2d
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


def test_gan_losses_hand_values() -> None:
    p = torch.tensor([0.5, -1.0])
    assert generator_gan_loss(p).item() == pytest.approx((0.25 + 4.0) / 2)
    real, fake = torch.tensor([1.5]), torch.tensor([0.5])
    assert discriminator_gan_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.25))
    assert gan_loss(torch.tensor([0.0]), True, "vanilla").item() == pytest.approx(math.log(2))
    assert gan_loss(torch.tensor([2.0]), False, "vanilla").item() == pytest.approx(math.log1p(math.exp(2)))
    with pytest.raises(ValueError, match="gan_mode"):
        gan_loss(p, True, "wgan")


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_gan_loss_gradcheck(mode: str) -> None:
    p = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gan_loss(t, True, mode) + gan_loss(t, False, mode), (p,))


def test_image_pool() -> None:
    assert torch.equal(ImagePool(0).query(torch.ones(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))
    pool = ImagePool(2, seed=0)
    first = torch.stack([torch.full((3, 2, 2), float(i)) for i in range(2)])
    assert torch.equal(pool.query(first), first) and len(pool) == 2  # filling: returned as is
    returned_old = 0
    for step in range(2, 42):
        new = torch.full((1, 3, 2, 2), float(step))
        stored_before = {float(t.mean()) for t in pool.images}
        out = pool.query(new)
        value = float(out.mean())
        stored_after = {float(t.mean()) for t in pool.images}
        if value == step:
            assert stored_after == stored_before  # the new fake passed through
        else:
            returned_old += 1
            assert value in stored_before and step in stored_after and value not in stored_after
        assert len(pool) == 2
    assert 8 <= returned_old <= 32  # p = 0.5 over 40 draws


def test_linear_decay_matches_cyclegan_policy_by_hand() -> None:
    """The engine's `linear_decay` schedule is CycleGAN/CUT's 'linear' policy:
    factor(e) = 1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)."""
    from taskbridge.engine.optim import _linear_decay_factor, build_scheduler

    f = _linear_decay_factor(3, 2, 0.0)
    assert [f(e) for e in range(5)] == pytest.approx([1, 1, 1, 1 - 1 / 3, 1 - 2 / 3])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, _ = build_scheduler(opt, {"type": "linear_decay", "n_constant": 100, "n_decay": 100}, total=200)
    for _ in range(150):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1 - 51 / 101)
