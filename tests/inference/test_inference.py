"""The inference model and evaluation stages: what a trained run owns is applied once, by itself."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from support.engine import write_image_folders
from taskbridge.cli import app, main
from taskbridge.engine.trainer import Trainer
from taskbridge.inference import (
    InferenceModel,
    Pipeline,
    PipelineError,
    RestorerStage,
    build_pipeline,
    load_inference_model,
)
from taskbridge.registry import RESTORERS
from taskbridge.restorers.base import FrozenRestorer

COUNTING = "_test_counting"


class CountingRestorer(FrozenRestorer):
    """Brightens, and counts every image it is applied to (across all instances)."""

    calls = 0

    def forward(self, images: Tensor) -> Tensor:
        CountingRestorer.calls += images.shape[0]
        return (images * 1.5).clamp(0, 1)


@pytest.fixture()
def counting() -> Iterator[type[CountingRestorer]]:
    RESTORERS.register(COUNTING)(CountingRestorer)
    CountingRestorer.calls = 0
    try:
        yield CountingRestorer
    finally:
        RESTORERS._entries.pop(COUNTING, None)
        RESTORERS._docs.pop(COUNTING, None)


@pytest.fixture()
def vat_run(shared_data: Path, tmp_path: Path, counting) -> Path:
    """A one-step VaT run (cycle loss only) whose restorer is the counting one; working size 32."""
    write_image_folders(shared_data, tmp_path / "data", size=32)
    cfg = {
        "name": "counting-vat", "seed": 0, "output_dir": str(tmp_path / "run"),
        "data": {"root": str(tmp_path / "data"), "train_A": "trainA", "train_B": "trainB", "size": 32, "batch_size": 2},
        "method": {"type": "vat", "task": {"type": "yolov5n"}, "restorer": {"type": COUNTING},
                   "translator": {"width": 4}, "use_mle": False},
        "train": {"steps": 1, "ckpt_every": 0, "image_every": 0, "device": "cpu", "progress": False, "tensorboard": False},
        "inference": {"working_size": 32},
    }
    Trainer(cfg).fit()
    return tmp_path / "run"


def test_inference_model_states_what_it_owns(vat_run: Path, counting) -> None:
    model = load_inference_model(vat_run)
    owns = model.owns()
    assert owns["restorer"] == COUNTING and owns["working_size"] == [32, 32] and owns["residual"] is True
    assert owns["method"] == "vat" and owns["step"] == 1 and owns["path"].endswith("step_0000001")
    x = torch.rand(2, 3, 50, 70)
    counting.calls = 0
    y = model(x)
    assert y.shape == x.shape and counting.calls == 2  # its restorer ran once per image, at the working size
    native = load_inference_model(vat_run, working_size=0)
    assert native.owns()["working_size"] == "native resolution"
    with pytest.raises(ValueError, match="without a reference image; drop --reference"):
        model(x, reference=torch.rand(1, 3, 8, 8))


def test_a_weights_only_copy_is_applied_but_not_resumed(vat_run: Path, counting, tmp_path: Path) -> None:
    """meta.json + model.safetensors (no optimizer/RNG state: what scripts/gpu_vat_fits.sh brings back) is
    enough to apply a run, and gives the same output; resuming it is refused with the reason."""
    import shutil

    from taskbridge.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

    full = resolve_checkpoint(vat_run, prefer="best")
    light = tmp_path / "light" / "checkpoints" / "best"
    light.mkdir(parents=True)
    for f in ("meta.json", "model.safetensors"):
        shutil.copy(full / f, light / f)
    x = torch.rand(2, 3, 40, 40)
    assert torch.equal(load_inference_model(light.parents[1])(x), load_inference_model(vat_run)(x))
    with pytest.raises(CheckpointError, match="state.safetensors is missing .*applied, not resumed"):
        load_checkpoint(light)
    (light / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_inference_model(light.parents[1])


def test_a_restorer_next_to_a_model_that_owns_one_is_refused(vat_run: Path, counting) -> None:
    model = load_inference_model(vat_run)
    with pytest.raises(PipelineError, match=f"--restorer aodnet: the translator .* already applies its own restorer \\({COUNTING}\\)"):
        build_pipeline("aodnet", model)
    pipe = build_pipeline(None, model)
    assert isinstance(pipe, Pipeline) and [s["stage"] for s in pipe.describe()] == ["translator"]


def test_evaluate_translator_restores_each_photo_once(vat_run: Path, counting, shared_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["evaluate", "--task", "yolov5n", "--data", str(shared_data / "dawn_fog"), "--limit", "3", "--grid", "0"]
    counting.calls = 0
    res = runner.invoke(app, [*base, "--translator", str(vat_run), "--no-baseline", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert counting.calls == 3  # 3 photos, one restoration each (inside the translator)
    settings = json.loads((tmp_path / "a" / "results.json").read_text())["runs"]["translator"]["settings"]
    assert settings["pipeline"][0]["restorer"] == COUNTING and settings["pipeline"][0]["working_size"] == [32, 32]

    counting.calls = 0
    res = runner.invoke(app, [*base, "--translator", str(vat_run), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["runs"]
    assert list(rows) == ["input", f"{COUNTING} (alone)", "translator"]
    assert counting.calls == 6  # the restorer-alone row and the translator row, 3 photos each


def test_evaluate_refuses_a_second_restorer_in_one_line(vat_run: Path, counting, shared_data: Path, tmp_path: Path,
                                                        monkeypatch, capsys) -> None:
    argv = ["taskbridge", "evaluate", "--task", "yolov5n", "--data", str(shared_data / "dawn_fog"), "--limit", "2",
            "--restorer", COUNTING, "--translator", str(vat_run), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    counting.calls = 0
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"--restorer {COUNTING}: the translator" in err and counting.calls == 0


def test_restore_then_evaluate_equals_evaluate_restorer(shared_data: Path, tmp_path: Path) -> None:
    """The protocol's promise: a folder restored by `taskbridge restore` scores what `evaluate --restorer` does."""
    runner = CliRunner()
    src = tmp_path / "fog"
    (src / "images").mkdir(parents=True)
    (src / "voc_xml").mkdir()
    names = sorted(p.name for p in (shared_data / "dawn_fog" / "images").iterdir())[:3]
    for n in names:
        (src / "images" / n).symlink_to(shared_data / "dawn_fog" / "images" / n)
        stem = Path(n).stem
        (src / "voc_xml" / f"{stem}.xml").symlink_to(shared_data / "dawn_fog" / "voc_xml" / f"{stem}.xml")
    restored = tmp_path / "restored"
    res = runner.invoke(app, ["restore", "--restorer", "aodnet", "--in", str(src / "images"), "--out", str(restored / "images")])
    assert res.exit_code == 0, res.output
    (restored / "voc_xml").symlink_to(src / "voc_xml")
    res = runner.invoke(app, ["evaluate", "--task", "yolov5n", "--data", str(src), "--restorer", "aodnet", "--grid", "0",
                              "--out", str(tmp_path / "direct")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--task", "yolov5n", "--data", str(restored), "--grid", "0",
                              "--out", str(tmp_path / "saved")])
    assert res.exit_code == 0, res.output
    direct = json.loads((tmp_path / "direct" / "results.json").read_text())["runs"]["aodnet"]
    saved = json.loads((tmp_path / "saved" / "results.json").read_text())["runs"]["input"]
    assert direct["voc"]["per_class"] == saved["voc"]["per_class"] and direct["map50"] == saved["map50"]


def test_working_size_residual_keeps_full_resolution_detail() -> None:
    class Shift(nn.Module):
        def translate(self, x: Tensor) -> Tensor:
            return x + 0.1

        def owned_restorer(self) -> None:
            return None

    x = 0.2 + 0.5 * torch.rand(1, 3, 64, 64)
    model = InferenceModel(Shift(), working_size=32, residual=True)
    assert torch.allclose(model(x), x + 0.1, atol=1e-5)  # a constant change survives down/up-sampling exactly
    plain = InferenceModel(Shift(), working_size=32, residual=False)(x)
    assert not torch.allclose(plain, x + 0.1, atol=1e-3)  # upsampling the output loses the detail
    stage = RestorerStage(nn.Identity(), "identity")
    assert Pipeline([stage, model]).describe()[0] == {"stage": "restorer", "restorer": "identity"}
