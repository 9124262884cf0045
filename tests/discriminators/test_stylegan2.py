"""StyleGAN2 and facial-component discriminators (GFP-GAN's): layout, shapes, gradients, stddev groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskbridge.discriminators.facial_component import FacialComponentDiscriminator
from taskbridge.discriminators.stylegan2 import Blur, ConvLayer, StyleGAN2Discriminator, minibatch_stddev
from taskbridge.registry import DISCRIMINATORS


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_counts_and_basicsr_key_layout() -> None:
    with torch.device("meta"):
        d1 = StyleGAN2Discriminator(512, channel_multiplier=1)
        d2 = StyleGAN2Discriminator(512, channel_multiplier=2)
    assert n_params(d1) == 24_030_753 and n_params(d2) == 28_982_849
    keys = list(d1.state_dict())
    assert keys[:7] == ["conv_body.0.0.weight", "conv_body.0.1.bias", "conv_body.1.conv1.0.weight",
                        "conv_body.1.conv1.1.bias", "conv_body.1.conv2.1.weight", "conv_body.1.conv2.2.bias",
                        "conv_body.1.skip.1.weight"]
    assert keys[-6:] == ["final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight",
                         "final_linear.0.bias", "final_linear.1.weight", "final_linear.1.bias"]
    assert len([k for k in keys if k.endswith("skip.1.weight")]) == 7  # 512 -> 4: seven down blocks
    assert tuple(d1.state_dict()["final_conv.0.weight"].shape) == (512, 513, 3, 3)  # + the stddev map
    assert not any("kernel" in k for k in keys)  # the blur kernel is fixed, not saved
    comp = FacialComponentDiscriminator()
    assert n_params(comp) == 1_110_785
    assert list(comp.state_dict())[:4] == ["conv1.0.weight", "conv1.1.bias", "conv2.1.weight", "conv2.2.bias"]
    assert list(comp.state_dict())[-2:] == ["final_conv.0.weight", "final_conv.0.bias"]


def test_blur_downsampling_halves_and_keeps_constants() -> None:
    x = torch.full((1, 2, 16, 16), 3.0)
    assert Blur((2, 2))(x)[..., 3:-3, 3:-3].allclose(torch.tensor(3.0))  # kernel sums to 1
    for k in (1, 3):
        layer = ConvLayer(2, 4, k, downsample=True, bias=False, activate=False)
        assert layer(x).shape == (1, 4, 8, 8)
    # blur == the separable [1,3,3,1]/8 filter applied along each axis (zero padded)
    y = torch.randn(1, 1, 9, 7)
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    want = F.conv2d(F.conv2d(F.pad(y, (1, 2, 1, 2)), k1.view(1, 1, 4, 1)), k1.view(1, 1, 1, 4))
    torch.testing.assert_close(Blur((1, 2))(y), want)


def test_registry_builds_both_and_shapes_and_gradients() -> None:
    d = DISCRIMINATORS.create("stylegan2", out_size=32, narrow=0.125)
    assert isinstance(d, StyleGAN2Discriminator) and d.value_range == (-1.0, 1.0)
    x = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_()
    out = d(x)
    assert out.shape == (4, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert [n for n, p in d.named_parameters() if p.grad is None or not p.grad.any()] == []
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        d(torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError, match="bogus"):
        DISCRIMINATORS.create("stylegan2", bogus=1)


def test_r1_penalty_double_backward_works() -> None:
    """GFP-GAN's R1 term needs the gradient of a gradient through every layer (no custom ops here)."""
    d = StyleGAN2Discriminator(16, narrow=0.0625)
    real = torch.randn(2, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(d(real).sum(), real, create_graph=True)
    grad.pow(2).flatten(1).sum(1).mean().backward()
    assert d.final_linear[0].weight.grad is not None and d.final_linear[0].weight.grad.any()


@pytest.mark.parametrize("batch, group", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (6, 3), (8, 4), (12, 4)])
def test_minibatch_stddev_groups_divide_the_batch(batch: int, group: int) -> None:
    """Largest group <= 4 dividing B (the reference itself fails for B = 5, 6, ...): every B runs."""
    x = torch.randn(batch, 4, 2, 2)
    out = minibatch_stddev(x, 4)
    assert out.shape == (batch, 5, 2, 2) and torch.equal(out[:, :4], x)
    m = batch // group  # samples i, i + m, i + 2m, ... share a group and so a statistic
    want = torch.stack([torch.sqrt(x[i::m].var(0, unbiased=False) + 1e-8).mean() for i in range(m)])
    torch.testing.assert_close(out[:, 4, 0, 0], want.repeat(group))
    assert out[:, 4].flatten(1).std(1).max() == 0  # one constant map per sample


def test_stylegan2_discriminator_runs_any_batch_size() -> None:
    d = StyleGAN2Discriminator(16, narrow=0.0625)
    assert [tuple(d(torch.randn(b, 3, 16, 16)).shape) for b in (1, 5, 6)] == [(1, 1), (5, 1), (6, 1)]


def test_facial_component_scores_and_features_on_request() -> None:
    d = DISCRIMINATORS.create("facial-component")
    assert isinstance(d, FacialComponentDiscriminator)
    eyes = (torch.rand(2, 3, 80, 80) * 2 - 1).requires_grad_()
    score = d(eyes)
    assert score.shape == (2, 1, 20, 20)
    score2, feats = d(eyes, return_feats=True)
    torch.testing.assert_close(score2, score)
    assert [tuple(f.shape) for f in feats] == [(2, 128, 40, 40), (2, 256, 20, 20)]
    # the Gram style loss backpropagates through the features to the crop and the layers
    gram = sum((f.flatten(2) @ f.flatten(2).transpose(1, 2)).mean() for f in feats) + score2.mean()
    gram.backward()
    assert eyes.grad is not None and eyes.grad.any()
    assert [n for n, p in d.named_parameters() if p.grad is None or not p.grad.any()] == []
    assert d(torch.zeros(1, 3, 120, 120)).shape == (1, 1, 30, 30)  # mouth crops are 120 px
    with pytest.raises(ValueError, match="multiples of 4"):
        d(torch.zeros(1, 3, 82, 80))
