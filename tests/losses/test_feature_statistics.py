"""Feature-statistics alignment: the per-channel moments, the loss, its gradient, the clean targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from taskbridge.checkpoint import load_checkpoint, load_trainable_state, save_checkpoint
from taskbridge.losses.feature_statistics import (
    RunningStatistics,
    channel_statistics,
    clean_feature_statistics,
    feature_statistics_loss,
)


def test_channel_statistics_are_the_moments_over_batch_and_space() -> None:
    x = torch.randn(3, 5, 4, 6) * torch.arange(1, 6).view(1, 5, 1, 1) + 2
    mean, std = channel_statistics(x)
    flat = x.transpose(0, 1).reshape(5, -1)
    assert torch.allclose(mean, flat.mean(1), atol=1e-6)
    assert torch.allclose(std, flat.std(1, unbiased=False), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        channel_statistics(torch.zeros(3, 4))


def test_loss_is_zero_on_target_and_grows_with_the_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(4, 8, 10, 10, generator=gen), torch.randn(4, 16, 5, 5, generator=gen) * 3]
    targets = [channel_statistics(f) for f in feats]
    assert float(feature_statistics_loss(feats, targets)) == pytest.approx(0.0, abs=1e-10)
    shifted = [feats[0] + 0.5, feats[1]]
    faded = [feats[0] * 0.5, feats[1] * 0.5]  # fog: lower contrast
    small, large = (float(feature_statistics_loss(f, targets)) for f in (shifted, [feats[0] + 1.0, feats[1]]))
    assert 0 < small < large
    # a mean shift of 0.5 clean-std on one of two levels: ((0.5)^2 / 1) / 2 levels
    assert small == pytest.approx(0.25 / 2, rel=0.02)
    assert float(feature_statistics_loss(faded, targets)) == pytest.approx(0.25, rel=0.02)  # (1 - 0.5)^2 per level
    with pytest.raises(ValueError, match="2 feature levels for 1 targets"):
        feature_statistics_loss(feats, targets[:1])
    with pytest.raises(ValueError, match="16 channels against 8"):
        feature_statistics_loss(feats[1:], targets[:1])


def test_loss_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(1)
    targets = [(torch.randn(3, generator=gen, dtype=torch.float64), torch.rand(3, generator=gen, dtype=torch.float64) + 0.5),
               (torch.randn(2, generator=gen, dtype=torch.float64), torch.rand(2, generator=gen, dtype=torch.float64) + 0.5)]
    a = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: feature_statistics_loss([x, y], targets), (a, b))


def test_clean_statistics_of_many_batches_are_those_of_their_union() -> None:
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(10, 3, 8, 8, generator=gen)

    def maps(x: torch.Tensor) -> list[torch.Tensor]:
        return [x * 2 - 1, torch.nn.functional.avg_pool2d(x, 2)]

    whole = clean_feature_statistics([images], maps)
    pieces = clean_feature_statistics(list(images.split(3)), maps)
    for (m1, s1), (m2, s2), f in zip(whole, pieces, maps(images), strict=True):
        assert torch.allclose(m1, m2, atol=1e-6) and torch.allclose(s1, s2, atol=1e-5)
        assert torch.allclose(m1, channel_statistics(f)[0], atol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        clean_feature_statistics([], maps)


def test_running_statistics_average_batches_and_survive_a_checkpoint(tmp_path: Path) -> None:
    """A resumed run continues the running average (not one batch); a checkpoint without it loads with none."""
    gen = torch.Generator().manual_seed(0)
    batches = [[channel_statistics(torch.randn(2, 3, 4, 4, generator=gen) + k)] for k in range(3)]

    def holder() -> nn.Module:
        mod = nn.Module()
        mod.conv, mod.memory = nn.Conv2d(3, 3, 1), RunningStatistics(0.9)
        return mod

    trained = holder()
    first = trained.memory(batches[0])
    assert torch.equal(first[0][0], batches[0][0][0])  # the first batch starts the average
    second = trained.memory(batches[1])
    assert torch.allclose(second[0][0], 0.9 * batches[0][0][0] + 0.1 * batches[1][0][0])
    save_checkpoint(tmp_path / "ckpt", trained, meta={"step": 2})
    model, _, _ = load_checkpoint(tmp_path / "ckpt")

    resumed = holder()
    load_trainable_state(resumed, model, "ckpt")
    assert resumed.memory.value is not None
    expected = trained.memory(batches[2])
    assert torch.allclose(resumed.memory(batches[2])[0][1], expected[0][1])

    older = holder()
    load_trainable_state(older, {k: v for k, v in model.items() if "memory" not in k}, "older ckpt")
    assert older.memory.value is None
    with pytest.raises(ValueError, match="momentum"):
        RunningStatistics(1.0)
