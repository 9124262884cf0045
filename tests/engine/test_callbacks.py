"""Trainer callbacks: order, state across resume, EMA by hand; methods built from swapped network sections."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from support.engine import TINY, TinyMethod, tiny_config, tiny_pairs, tiny_registered
from taskbridge.callbacks import EMA, Callback, ParameterDrift
from taskbridge.engine.trainer import Trainer
from taskbridge.registry import METHODS

SRC = Path(__file__).resolve().parents[2] / "src" / "taskbridge"
EMA_METHOD = "_test_ema_method"


class EMAMethod(TinyMethod):
    """The tiny method with an EMA copy of its translator (as GFP-GAN keeps G_ema) and a call recorder."""

    frozen_modules = ("pre",)  # the EMA copy is not trainable but changes: it must be saved

    def __init__(self, decay: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.net_ema = EMA.copy_of(self.net)
        self.decay = decay
        self.seen: list[tuple[str, int]] = []

    def callbacks(self) -> list[Callback]:
        method = self

        class Recorder(Callback):
            name = "recorder"

            def on_fit_start(self, run: Any) -> None:
                method.seen.append(("start", run.step))

            def on_step_end(self, run: Any, batch: Any, outputs: Any) -> None:
                method.seen.append(("step", run.step))

            def on_fit_end(self, run: Any) -> None:
                method.seen.append(("end", run.step))

        return [EMA(self.net, self.net_ema, self.decay), ParameterDrift({"net": self.net}), Recorder()]


@pytest.fixture(autouse=True)
def _methods() -> Iterator[None]:
    with tiny_registered():
        METHODS.register(EMA_METHOD)(EMAMethod)
        try:
            yield
        finally:
            METHODS._entries.pop(EMA_METHOD, None)
            METHODS._docs.pop(EMA_METHOD, None)


def _trainer(shared_data: Path, out: Path, **train: Any) -> Trainer:
    cfg = tiny_config(out, log_every=1, **train)
    cfg["method"] = {"type": EMA_METHOD, "decay": 0.5}
    return Trainer(cfg, train_data=tiny_pairs(shared_data))


def test_ema_by_hand() -> None:
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        dst.weight.fill_(1.0)
        dst.bias.fill_(-1.0)
    before = dst.weight.clone()
    EMA(src, dst, decay=0.9).on_step_end(None, None, {})  # type: ignore[arg-type]
    assert torch.allclose(dst.weight, 0.9 * before + 0.1 * src.weight.detach())
    assert torch.allclose(dst.bias, 0.9 * -1.0 + 0.1 * src.bias.detach())
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(src, dst, decay=1.0)


def test_method_callbacks_run_in_order_and_the_ema_copy_is_saved(shared_data: Path, tmp_path: Path) -> None:
    t = _trainer(shared_data, tmp_path)
    names = [cb.name for cb in t.callbacks]
    assert names == ["ema", "drift", "recorder", "log", "images"]  # the method's first, then the engine's
    # the EMA copy, followed by hand over the same steps, from the initial weights
    net0 = {k: v.clone() for k, v in t.method.net.state_dict().items()}
    t.fit()
    seen = t.method.seen
    assert seen[0] == ("start", 0) and seen[-1] == ("end", 7)
    assert [s for kind, s in seen if kind == "step"] == list(range(1, 8))
    assert not torch.equal(t.method.net_ema[0].weight, net0["0.weight"])  # it moved ...
    assert not torch.equal(t.method.net_ema[0].weight, t.method.net[0].weight)  # ... and lags the trained net
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    drift = [r["drift/net"] for r in rows if "drift/net" in r]
    assert len(drift) == 7 and drift[0] > 0 and drift == sorted(drift)  # Adam keeps moving it away
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "checkpoints" / "step_0000007" / "model.safetensors"))
    assert torch.equal(saved["net_ema.0.weight"], t.method.net_ema[0].weight)
    assert not any(k.startswith("pre.") for k in saved)


def test_callback_state_makes_resume_exact(shared_data: Path, tmp_path: Path) -> None:
    full = _trainer(shared_data, tmp_path / "full")
    full.fit()
    first = _trainer(shared_data, tmp_path / "cut")
    first.fit(until=3)
    again = _trainer(shared_data, tmp_path / "cut")
    again.fit(resume="auto")
    for k, v in full.method.state_dict().items():
        assert torch.equal(v, again.method.state_dict()[k]), k  # EMA copy included
    drift = {}
    for name in ("full", "cut"):
        rows = [json.loads(r) for r in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        drift[name] = {r["step"]: r["drift/net"] for r in rows if "drift/net" in r}
    assert drift["cut"] == drift["full"]  # the start weights came back from the checkpoint


def test_the_trainer_probes_no_hooks() -> None:
    tree = ast.parse((SRC / "engine" / "trainer.py").read_text())
    probes = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") in ("hasattr", "getattr")]
    assert probes == [], [ast.unparse(p) for p in probes]


def test_a_swapped_generator_trains(shared_data: Path, tmp_path: Path) -> None:
    """CycleGAN with its generators swapped by the recipe for VaT's U-transformer (images in [0, 1])."""
    cfg = tiny_config(tmp_path, steps=5)
    cfg["method"] = {"type": "cyclegan", "generator": {"type": "vat", "in_channels": 3, "width": 4},
                     "discriminator": {"ndf": 4, "n_layers": 1}, "pool_size": 2}
    cfg["optim"] = {}
    t = Trainer(cfg, train_data=tiny_pairs(shared_data, size=16))
    from taskbridge.translators.vat import VaTTranslator

    assert isinstance(t.method.G_A, VaTTranslator) and t.method.range == (0.0, 1.0)
    before = {k: v.clone() for k, v in t.method.G_A.state_dict().items()}
    t.fit()
    assert t.step == 5 and all(torch.isfinite(torch.tensor(v)) for k, v in t.last_metrics.items() if k.startswith("loss/"))
    assert any(not torch.equal(v, t.method.G_A.state_dict()[k]) for k, v in before.items())
    x = tiny_pairs(shared_data, size=16).a[:1]
    with torch.no_grad():
        assert torch.equal(t.method.translate(x), t.method.G_A(x).clamp(0, 1))  # no [-1, 1] mapping for this net


def test_cut_refuses_a_generator_without_taps() -> None:
    from taskbridge.config import ConfigError, build

    with pytest.raises(ConfigError, match="reads named features of its generator.*'vat' has none"):
        build(METHODS, {"type": "cut", "generator": {"type": "vat", "width": 4}}, "method")


def test_tiny_method_needs_no_callbacks(shared_data: Path, tmp_path: Path) -> None:
    t = Trainer(tiny_config(tmp_path), train_data=tiny_pairs(shared_data))
    assert [cb.name for cb in t.callbacks] == ["log", "images"] and METHODS.get(TINY) is TinyMethod
