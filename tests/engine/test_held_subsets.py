"""A VaT subset held at lr 0 (`optim.translator.param_groups`) stays exactly at its start through a real fit
(schedule floor and weight decay included), while the gate trains, and the saved run loads back whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.steps=3", "data.resize=[32,32]", "data.size=32", "data.crop=null", "data.batch_size=2",
        "method.use_mle=false", "method.nuq_fit=null", "method.conf_hi_quantile=null", "val.type=none",
        "train.progress=false", "train.tensorboard=false", "train.image_every=0", "train.device=cpu",
        "inference.working_size=32", "optim.translator.weight_decay=0.1", "schedule.eta_min=1.0e-3"]


def test_gate_only_fit_holds_the_transform_and_saves_it(shared_data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from taskbridge.engine.trainer import Trainer
    from taskbridge.inference import load_inference_model

    monkeypatch.chdir(REPO)  # the recipe's split file and data root resolve as in the repository
    trainer = Trainer.from_recipe("recipes/dehaze-det-vat-learn-gateonly.yaml", TINY, output_dir=tmp_path / "run")
    start = {k: v.detach().clone() for k, v in trainer.method.state_dict().items() if k.startswith(("T_A.", "T_B."))}
    trainer.fit()
    model = load_inference_model(tmp_path / "run", prefer="last")
    after = {k: v for k, v in model.method.state_dict().items() if k in start}
    assert after.keys() == start.keys()
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(k.startswith("T_A.fusion.") for k in moved)  # only the gate trained


def test_resuming_with_other_parameter_groups_is_one_clear_error() -> None:
    from taskbridge.checkpoint import CheckpointError
    from taskbridge.engine.state import restore

    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    then = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=1e-3)
    now = torch.optim.AdamW([a], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(now, lambda _t: 1.0)
    state = {"optim": {"translator": then.state_dict()}, "sched": {"translator": sched.state_dict()}, "rng": None}
    with pytest.raises(CheckpointError, match=r"run/step_1: optimizer 'translator' does not match this recipe"):
        restore(state, {"translator": now}, {"translator": sched}, None, None, [], "run/step_1")


def test_held_subsets_of_the_same_shape_as_a_training_one() -> None:
    """Groups are told apart by identity, never by comparing their tensors."""
    from taskbridge.engine.optim import build_optimizer

    train, held = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([train, held], {"type": "adamw", "lr": 1e-3, "param_groups": {"a": {"lr": 1e-2}, "b": {"lr": 0.0}}},
                          subsets={"a": [train], "b": [held]})
    assert [g["params"] for g in opt.param_groups] == [[train]]
    assert train.requires_grad and not held.requires_grad
