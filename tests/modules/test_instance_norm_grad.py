"""The PyTorch instance-norm gradient fault our InstanceNorm2d guards against, and PatchNCE's gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskbridge.losses.patchnce import gather_patches
from taskbridge.modules.layers import InstanceNorm2d, make_norm
from taskbridge.registry import TRANSLATORS


def by_hand(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((2, 3), keepdim=True)
    return (x - m) / (x.var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()


def input_grad(norm, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    x = x.detach().clone().requires_grad_(True)
    norm(x).backward(grad)
    return x.grad


@pytest.mark.parametrize("batch", [1, 2])
def test_instance_norm_gradient_with_a_channels_last_output_gradient(batch: int) -> None:
    torch.manual_seed(0)
    x, g = torch.randn(batch, 8, 6, 6, dtype=torch.float64), torch.randn(batch, 8, 6, 6, dtype=torch.float64)
    want = input_grad(by_hand, x, g)
    ours = input_grad(InstanceNorm2d(8), x, g.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ours, want, atol=1e-10)
    assert isinstance(make_norm("instance", 8), InstanceNorm2d)
    stock = input_grad(F.instance_norm, x, g.contiguous(memory_format=torch.channels_last))
    if batch == 1 and not torch.allclose(stock, want, atol=1e-6):  # the PyTorch fault (2.14.1, CPU)
        assert float((stock - want).abs().max()) > 1.0


def test_patchnce_gradient_of_a_batch_is_the_sum_of_its_images() -> None:
    """Seen through the generator: a batch of 2 vs its two single images, in float64."""
    torch.manual_seed(0)
    g = TRANSLATORS.create("resnet-generator", ngf=8, n_blocks=2, antialias=True, init="xavier").double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    ids = torch.randperm(64)[:16]

    def grads(a: torch.Tensor) -> torch.Tensor:
        g.zero_grad()
        fake, taps = g.forward_with_taps(a, ["block1"])
        q = g.encode(fake, ["block1"])[0]
        (gather_patches(q, ids) * gather_patches(taps[0].detach(), ids)).sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in g.parameters() if p.grad is not None])

    full, halves = grads(x), grads(x[:1]) + grads(x[1:])
    assert float((full - halves).norm() / full.norm()) < 1e-10
