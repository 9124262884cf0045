"""Learning-rate schedules against the references' policies."""

from __future__ import annotations

import pytest
import torch


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


def test_multistep_halves_at_each_milestone_and_needs_milestones() -> None:
    from taskbridge.config import ConfigError
    from taskbridge.engine.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, _ = build_scheduler(opt, {"type": "multistep", "milestones": [2, 4]}, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ConfigError, match="milestones"):
        build_scheduler(opt, {"type": "multistep"}, total=6)
    with pytest.raises(ConfigError, match="milestones"):
        build_scheduler(opt, {"type": "cosine", "milestones": [2]}, total=6)
