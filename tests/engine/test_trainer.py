"""Engine: exact resume, checkpoints, optimizers/schedules, NaN guard, validation-based selection, logging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from support.engine import TINY, TinyMethod, tiny_config, tiny_pairs, tiny_registered
from taskbridge import checkpoint as ckpt
from taskbridge.config import ConfigError
from taskbridge.engine.optim import build_optimizer, build_scheduler, merge_group_spec
from taskbridge.engine.sampler import EpochBatchSampler
from taskbridge.engine.trainer import NonFiniteLossError, Trainer
from taskbridge.inference import load_inference_model


@pytest.fixture(autouse=True)
def _tiny_method_registered():
    with tiny_registered():
        yield




def _trainer(shared_data: Path, out: Path, validator=None, **train) -> Trainer:
    return Trainer(tiny_config(out, **train), train_data=tiny_pairs(shared_data), validator=validator)


def _assert_same_state(t1: Trainer, t2: Trainer) -> None:
    s1, s2 = t1.method.state_dict(), t2.method.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), f"weights differ at {k}"
    for g in t1.optimizers:
        o1, o2 = t1.optimizers[g].state_dict(), t2.optimizers[g].state_dict()
        for pid in o1["state"]:
            for name, v in o1["state"][pid].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(o2["state"][pid][name])), f"optim {g}/{pid}/{name}"
        assert t1.optimizers[g].param_groups[0]["lr"] == t2.optimizers[g].param_groups[0]["lr"]


def test_resume_gives_bit_identical_weights(shared_data: Path, tmp_path: Path) -> None:
    """Interrupt at step 3 (mid-epoch), resume and interrupt again at 4 (epoch boundary), resume to 7 in
    fresh trainers: weights, optimizer moments and lrs equal an uninterrupted run's exactly."""
    full = _trainer(shared_data, tmp_path / "full")
    full.fit()
    assert full.step == 7

    first = _trainer(shared_data, tmp_path / "cut")
    res = first.fit(until=3)
    assert res["step"] == 3 and (tmp_path / "cut" / "checkpoints" / "step_0000003").is_dir()
    assert not torch.equal(first.method.net[0].weight, full.method.net[0].weight)
    for until in (4, None):
        torch.manual_seed(12345)  # a different global RNG state: resume must overwrite it
        torch.randn(100)
        again = _trainer(shared_data, tmp_path / "cut")
        res = again.fit(resume="auto", until=until)
        assert res["resumed_from"].endswith("step_0000003" if until == 4 else "step_0000004")
    assert again.step == 7
    _assert_same_state(full, again)


def test_checkpoint_layout_and_translator(shared_data: Path, tmp_path: Path) -> None:
    t = _trainer(shared_data, tmp_path)
    t.fit(until=2)
    d = tmp_path / "checkpoints" / "step_0000002"
    assert (tmp_path / "checkpoints" / "LAST").read_text().strip() == "step_0000002"
    model = load_file(str(d / "model.safetensors"))
    assert "net.0.weight" in model and "net.1.running_mean" in model
    assert not any(k.startswith("pre.") for k in model), "frozen submodule was saved"
    meta = json.loads((d / "meta.json").read_text())
    assert meta["step"] == 2 and meta["config"]["method"]["type"] == TINY
    assert meta["data"]["steps_per_epoch"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*")), "temporary directory left behind"

    translator = load_inference_model(tmp_path)  # run dir: best if any, else last
    x = tiny_pairs(shared_data).a[:2]
    t.method.eval()
    translator.method.pre.load_state_dict(t.method.pre.state_dict())  # frozen part comes from its builder
    with torch.no_grad():
        assert torch.equal(translator(x), t.method.translate(x).clamp(0, 1))
    assert translator.meta["step"] == 2 and translator.owns()["working_size"] == "native resolution"


def test_split_join_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    obj = {"state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2)}}, "groups": [{"betas": (0.5, 0.9), "lr": 1e-3}],
           "none": None, "dtype": torch.float16}
    tensors: dict[str, torch.Tensor] = {}
    doc = json.loads(json.dumps(ckpt.split_tensors(obj, "s", tensors)))
    back = ckpt.join_tensors(doc, tensors)
    assert back["groups"][0]["betas"] == (0.5, 0.9) and 0 in back["state"] and back["dtype"] is torch.float16
    assert torch.equal(back["state"][0]["m"], torch.ones(2))

    m = TinyMethod()
    first = ckpt.save_checkpoint(tmp_path / "c", m, {"x": torch.zeros(1)}, {"step": 1})
    with pytest.raises(ckpt.CheckpointError, match="cannot store"):
        ckpt.save_checkpoint(tmp_path / "c", m, {"x": object()}, {"step": 2})
    assert ckpt.read_meta(first)["step"] == 1  # failed save left the old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        ckpt.resolve_checkpoint(tmp_path / "nothing")


def test_nan_raises_after_saving_last_good(shared_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg["method"]["nan_at"] = 2
    t = Trainer(cfg, train_data=tiny_pairs(shared_data))
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite loss loss/G=nan"):
        t.fit()
    good = tmp_path / "checkpoints" / "last-good"
    assert ckpt.read_meta(good)["step"] == 2

    cfg["output_dir"] = str(tmp_path / "skip")
    cfg["train"]["on_nan"] = "skip"
    t2 = Trainer(cfg, train_data=tiny_pairs(shared_data))
    with pytest.warns(UserWarning, match="step skipped"):
        t2.fit()
    assert t2.step == 7 and all(torch.isfinite(p).all() for p in t2.method.parameters())


def test_validation_selects_best_on_val_split(shared_data: Path, tmp_path: Path) -> None:
    scores = {2: 0.1, 4: 0.7, 6: 0.3, 7: 0.2}
    calls: list[int] = []

    def validator(translator: torch.nn.Module, step: int) -> dict[str, float]:
        assert not translator.training
        calls.append(step)
        return {"acc": scores[step], "other": 1.0}

    cfg = tiny_config(tmp_path, val_every=2)
    cfg["val"] = {"metric": "acc", "mode": "max"}
    t = Trainer(cfg, train_data=tiny_pairs(shared_data), validator=validator)
    res = t.fit()
    assert calls == [2, 4, 6, 7]
    meta = ckpt.read_meta(tmp_path / "checkpoints" / "best")
    assert meta["selected_by"] == {"split": "val", "metric": "acc", "mode": "max", "value": 0.7, "step": 4}
    assert meta["step"] == 4 and res["best_value"] == 0.7
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/acc"] for r in rows if r["kind"] == "val"] == [0.1, 0.7, 0.3, 0.2]
    assert any("loss/G" in r and "lr/G" in r for r in rows if r["kind"] == "train")


def test_validation_at_start_lets_selection_keep_the_network_as_built(shared_data: Path, tmp_path: Path) -> None:
    """Training that only makes validation worse selects step 0, whose weights are the initial ones;
    a resumed run does not score its start again."""
    scores = {0: 0.9, 4: 0.5, 7: 0.6}
    calls: list[int] = []

    def validator(translator: torch.nn.Module, step: int) -> dict[str, float]:
        calls.append(step)
        return {"acc": scores[step]}

    cfg = tiny_config(tmp_path, val_every=4, val_at_start=True)
    cfg["val"] = {"metric": "acc", "mode": "max"}
    t = Trainer(cfg, train_data=tiny_pairs(shared_data), validator=validator)
    start = {k: v.clone() for k, v in t.method.state_dict().items()}
    t.fit(until=4)
    assert calls == [0, 4]
    meta = ckpt.read_meta(tmp_path / "checkpoints" / "best")
    assert meta["step"] == 0 and meta["selected_by"]["value"] == 0.9
    best = load_inference_model(tmp_path / "checkpoints" / "best")
    assert torch.equal(best.method.net[0].weight, start["net.0.weight"])
    assert not torch.equal(t.method.net[0].weight, start["net.0.weight"])  # training did move it
    resumed = Trainer(cfg, train_data=tiny_pairs(shared_data), validator=validator)
    res = resumed.fit(resume="auto")
    assert calls == [0, 4, 7] and res["best_value"] == 0.9


def test_images_and_tensorboard(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    t = _trainer(shared_data, tmp_path, image_every=2, tensorboard=True, steps=2)
    t.fit()
    pngs = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert "step_0000002_translated.png" in pngs and "step_0000002_gate.png" in pngs
    assert not any("boxes" in p for p in pngs)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_optimizers_and_schedules() -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(p, {"type": "adamw", "lr": 1e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999]})
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(p, {"type": "rmsprop", "lr": 1})
    with pytest.raises(ConfigError, match="optim.G: .*momentm"):
        build_optimizer(p, {"type": "sgd", "lr": 1, "momentm": 0.9}, where="optim.G")

    sched, interval = build_scheduler(opt, {"type": "cosine_warm_restarts", "T_0": 2, "T_mult": 2, "eta_min": 1e-6}, 100)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert interval == "step"
    assert lrs[0] == pytest.approx(1e-4) and lrs[2] == pytest.approx(1e-4) and lrs[6] == pytest.approx(1e-4)  # restarts at 2, 6
    assert lrs[1] == pytest.approx(1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi / 2)) / 2)

    opt2 = build_optimizer(p, {"type": "adam", "lr": 1.0})
    lin, _ = build_scheduler(opt2, {"type": "linear_decay", "interval": "epoch", "n_constant": 2, "n_decay": 3}, 5)
    seen = []
    for _ in range(6):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        lin.step()
    # CycleGAN: 1 - max(0, e + 1 - n) / (n_decay + 1)
    assert seen == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ConfigError, match="T_0 do.* not apply to a 'constant' schedule"):
        build_scheduler(opt2, {"type": "constant", "T_0": 3}, 5)

    assert merge_group_spec({"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}, {"lr": 1e-3}) == {
        "type": "adam", "lr": 1e-3, "betas": [0.5, 0.999]}
    assert merge_group_spec({"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}, {"type": "sgd"}) == {"type": "sgd", "lr": 2e-4}


def test_sampler_resume_positions() -> None:
    s = EpochBatchSampler(7, 2, seed=1)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start_batch=2)
    assert list(s) == full[2:] and len(full) == 3
    s.set_epoch(2)
    assert list(s) != full


def test_recipe_errors(shared_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg["trian"] = {}
    with pytest.raises(ConfigError, match="^recipe: trian: unknown key$"):
        Trainer(cfg, train_data=tiny_pairs(shared_data))
    cfg = tiny_config(tmp_path, stpes=3)
    with pytest.raises(ConfigError, match="^recipe: train.stpes: unknown key$"):
        Trainer(cfg, train_data=tiny_pairs(shared_data))
    cfg = tiny_config(tmp_path)
    cfg["optim"]["E"] = {"lr": 1}
    with pytest.raises(ConfigError, match="no method group.*E; the method has G, D"):
        Trainer(cfg, train_data=tiny_pairs(shared_data))


def test_cyclegan_resume_is_exact_with_its_image_pools(shared_data: Path, tmp_path: Path) -> None:
    """CycleGAN keeps state outside its weights (image pools + their sampler): saved and restored too."""

    def cyclegan(out: Path) -> Trainer:
        cfg = tiny_config(out)
        cfg["method"] = {"type": "cyclegan", "generator": {"ngf": 4, "n_blocks": 1},
                         "discriminator": {"ndf": 4, "n_layers": 1}, "pool_size": 3}
        cfg["optim"] = {}
        cfg["train"]["steps"] = 5
        return Trainer(cfg, train_data=tiny_pairs(shared_data, size=16))

    full = cyclegan(tmp_path / "full")
    full.fit()
    first = cyclegan(tmp_path / "cut")
    first.fit(until=3)  # pools are full (3 fakes) and already sampling from their RNG
    torch.manual_seed(999)
    again = cyclegan(tmp_path / "cut")
    again.fit(resume="auto")
    assert again.step == 5
    _assert_same_state(full, again)
    for pool in ("pool_A", "pool_B"):
        p1, p2 = getattr(full.method, pool), getattr(again.method, pool)
        assert len(p1) == len(p2) == 3 and all(torch.equal(a, b) for a, b in zip(p1.images, p2.images, strict=True))
