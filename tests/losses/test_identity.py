"""Identity loss: GFP-GAN's grey 128 px input, L1 of a (tiny random) network's embeddings, disabled without one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taskbridge.losses.identity import IdentityLoss, identity_input
from taskbridge.registry import LOSSES


def _tiny_net(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, stride=4), nn.BatchNorm2d(4), nn.PReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 8))  # 32 px input


def test_input_is_gfpgans_grey_resize() -> None:
    x = torch.rand(2, 3, 64, 48)
    y = identity_input(x)
    s = x * 2 - 1
    grey = 0.2989 * s[:, :1] + 0.5870 * s[:, 1:2] + 0.1140 * s[:, 2:]
    assert y.shape == (2, 1, 128, 128)
    assert torch.allclose(y, F.interpolate(grey, (128, 128), mode="bilinear", align_corners=False), atol=1e-6)
    assert identity_input(x, 16, grey=True, channels=3).shape == (2, 3, 16, 16)
    assert identity_input(x, 16, grey=False, channels=3, value_range=(0, 1)).shape == (2, 3, 16, 16)


def test_identity_loss_with_a_tiny_network() -> None:
    net = _tiny_net()
    loss = LOSSES.create("identity", network=net, size=32)
    assert isinstance(loss, IdentityLoss) and loss.enabled and loss.weight == 10.0
    x = torch.rand(2, 3, 40, 40)
    assert loss(x, x.clone()).item() == 0.0
    out = torch.rand(2, 3, 40, 40, requires_grad=True)
    value = loss(out, x)
    want = 10.0 * (net(identity_input(out, 32)) - net(identity_input(x, 32))).abs().mean()
    assert torch.allclose(value, want)
    value.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())
    loss.train()
    assert not net.training  # BatchNorm statistics never move


def test_without_a_network_the_loss_is_disabled_with_a_clear_message() -> None:
    loss = IdentityLoss()
    assert not loss.enabled
    with pytest.raises(RuntimeError, match="no identity network.*offline"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="channels=3"):
        IdentityLoss(grey=False, channels=1)
