"""Content and aligned-style losses: k = 1 is the plain AdaIN style loss, masks are per sample,
gradients checked in float64, and the public code's batch > 1 defect is not reproduced."""

from __future__ import annotations

import torch

from taskbridge.losses.style_content import aligned_style_loss, aligned_style_per_sample, content_loss
from taskbridge.modules.adain import channel_mean_std
from taskbridge.registry import LOSSES


def _feats(b: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, c, s, s, generator=g) * (1 + i) for i, (c, s) in enumerate([(8, 12), (16, 6), (20, 4)])]


def test_k_one_is_the_plain_adain_style_loss() -> None:
    out, ref = _feats(3, 0), _feats(3, 1)
    plain = 0.0
    for o, r in zip(out, ref, strict=False):
        (mo, so), (mr, sr) = channel_mean_std(o), channel_mean_std(r)
        plain = plain + torch.nn.functional.mse_loss(mo, mr) + torch.nn.functional.mse_loss(so, sr)
    assert torch.allclose(aligned_style_loss(out, ref, 1.0), plain, atol=1e-7)
    assert torch.allclose(LOSSES.create("aligned-style", k=1.0)(out, ref), plain, atol=1e-7)


def test_k_keeps_the_smallest_mean_errors_and_the_same_channels_for_std() -> None:
    out, ref = torch.zeros(1, 10, 4, 4), torch.zeros(1, 10, 4, 4)
    ref[:, :, ::2] = torch.arange(10.0)[None, :, None, None]  # mean error grows with the channel index
    (mo, so), (mr, sr) = channel_mean_std(out), channel_mean_std(ref)
    want = (((mo - mr) ** 2 + (so - sr) ** 2)[:, :8]).sum() / 10
    assert torch.allclose(aligned_style_per_sample(out, ref, 0.8), want.reshape(1))


def test_a_samples_loss_does_not_depend_on_its_batch() -> None:
    """The public code masks std errors with the whole batch's sort: with batch > 1 a sample's loss changes
    with its neighbours. Here the batch loss is the mean of the single-sample losses."""
    out, ref = _feats(4, 2), _feats(4, 3)
    batch = aligned_style_per_sample(out[0], ref[0], 0.5)
    singles = torch.stack([aligned_style_per_sample(out[0][i:i + 1], ref[0][i:i + 1], 0.5)[0] for i in range(4)])
    assert torch.allclose(batch, singles, atol=1e-7)
    assert torch.allclose(aligned_style_loss(out, ref, 0.5),
                          sum(torch.stack([aligned_style_per_sample(o[i:i + 1], r[i:i + 1], 0.5)[0] for i in range(4)]).mean()
                              for o, r in zip(out, ref, strict=False)), atol=1e-6)


def test_gradients_float64() -> None:
    g = torch.Generator().manual_seed(4)
    out = torch.rand(2, 6, 5, 5, dtype=torch.float64, generator=g).requires_grad_()
    ref = torch.rand(2, 6, 5, 5, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda o: aligned_style_per_sample(o, ref, 0.5), (out,))
    assert torch.autograd.gradcheck(lambda o: content_loss(o, ref), (out,))


def test_content_loss_ignores_channel_statistics() -> None:
    x = torch.rand(2, 5, 8, 8)
    assert content_loss(x * 3 + 1, x) < 1e-5 and content_loss(torch.rand(2, 5, 8, 8), x) > 0.5
