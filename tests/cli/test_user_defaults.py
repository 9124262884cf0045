"""Defaults a person expects: torch threads, outputs under runs/, command-line paths from the current
directory, validation lines during training, and labelled side-by-side pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import taskbridge.cli as cli
from support.engine import tiny_config, tiny_pairs, tiny_registered, write_image_folders
from taskbridge.cli import app
from taskbridge.cli.outputs import LABEL_STRIP, side_by_side
from taskbridge.config import load_recipe
from taskbridge.data.io import read_image
from taskbridge.engine.data import plan_data
from taskbridge.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{args}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res.output


def _small_photos(shared_data: Path, folder: Path, names: tuple[str, ...] = ("NYU2_102_7_2.jpg", "canyon.png"),
                  width: int = 64) -> list[Path]:
    """Real hazy photos, resized small (PNG: the pixels read back are the pixels written)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        with Image.open(shared_data / "hazy_unlabeled_aodnet" / name) as im:
            im = im.convert("RGB")
            small = im.resize((width, round(im.height * width / im.width)), Image.BILINEAR)
        path = folder / f"{Path(name).stem}.png"
        small.save(path)
        out.append(path)
    return out


# ----------------------------------------------------------------------------------------------- 1. threads


def _bench_threads(args: list[str], env: dict[str, str]) -> int:
    """`taskbridge bench` prints the torch thread count it ran with: the cheapest command that reports it."""
    proc = subprocess.run([sys.executable, "-m", "taskbridge", *args, "bench", "--translators", "vat", "--sizes", "16",
                           "--iters", "1", "--warmup", "0", "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = proc.stdout.splitlines()[0]
    return int(header.split(" threads")[0].rsplit(" ", 1)[1])


def test_threads_option_env_and_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TASKBRIDGE_THREADS")}
    assert _bench_threads(["--threads", "1"], env) == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _bench_threads([], env) == cores  # the program's default: every core it may use


def test_threads_callback_default_env_and_help(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(cli, "_PROGRAM", True)
        cli._root(threads=None)
        assert torch.get_num_threads() == cli.default_threads() >= 1
        cli._root(threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the person's own setting is left to torch
        assert cli.default_threads() is None
        monkeypatch.setattr(cli, "_PROGRAM", False)
        torch.set_num_threads(1)
        _ok(["list", "degradation"])  # in-process callers (tests, notebooks) keep their count
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("TASKBRIDGE_THREADS", "1")
        _ok(["list", "degradation"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    text = _ok(["--help"])
    assert "--threads" in text and "TASKBRIDGE_THREADS" in text
    res = runner.invoke(app, ["--threads", "0", "list"])
    assert res.exit_code == 2


# ----------------------------------------------------------------------------------------------- 2. outputs


def test_default_outputs_go_under_runs(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = tmp_path / "photos"
    inputs = _small_photos(shared_data, photos, width=256)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _ok(["restore", "-r", "identity", "--in", str(photos)])
    _ok(["restore", "-r", "identity", "--in", str(photos)])  # again: a fresh folder, nothing replaced
    _ok(["degrade", "--kind", "haze", "--in", str(photos)])
    _ok(["evaluate-quality", "--pred", str(photos)])
    _ok(["evaluate-quality", "--pred", str(photos)])
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing in the current directory itself
    assert (work / "runs/restore/photos-identity/restore.json").is_file()
    assert (work / "runs/restore/photos-identity-2/restore.json").is_file()
    assert (work / "runs/degrade/photos-haze/degrade.json").is_file()
    assert sorted(p.name for p in (work / "runs/evaluate-quality").iterdir()) == ["photos-2.json", "photos.json"]
    assert sorted(p.name for p in photos.iterdir()) == sorted(p.name for p in inputs)  # inputs untouched


def test_evaluate_quality_never_writes_over_an_input(shared_data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    first = _small_photos(shared_data, photos, width=256)[0]
    data = first.read_bytes()
    res = runner.invoke(app, ["evaluate-quality", "--pred", str(photos), "--json", str(first)])
    assert res.exit_code == 2 and "one of the inputs" in res.output
    assert first.read_bytes() == data
    res = runner.invoke(app, ["evaluate-quality", "--pred", str(photos), "--json", str(photos)])
    assert res.exit_code == 2 and "is a folder" in res.output


# ----------------------------------------------------------------------------------------------- 3. paths


def test_path_overrides_read_from_the_current_directory(shared_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    _small_photos(shared_data, mine)
    monkeypatch.chdir(tmp_path)
    over = [f"data.root={shared_data}", "data.train_A=mine", "data.train_B=coco8/images/train"]
    cfg = load_recipe(REPO / "recipes" / "smoke.yaml", over)
    assert cfg.data.train_A == str(mine)  # exists here: taken from the current directory
    assert cfg.data.train_B == "coco8/images/train"  # only under data.root: keeps the recipe meaning
    plan = plan_data(dict(cfg.data), seed=0)
    assert plan.info["train_A"] == 2 and plan.info["train_B"] == len(list((shared_data / "coco8/images/train").iterdir()))
    cfg = load_recipe(REPO / "recipes" / "smoke.yaml", ["data.train_A=[mine, lowlight_unlabeled_sci/medium]",
                                                        "train.steps=3"])
    assert list(cfg.data.train_A) == [str(mine), "lowlight_unlabeled_sci/medium"] and cfg.train.steps == 3
    assert "current directory" in _ok(["fit", "--help"])


# ----------------------------------------------------------------------------------------------- 4. validation lines


def test_validation_results_are_printed_as_they_come(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    scores = {2: 0.1, 4: 0.7, 6: 0.3, 7: 0.2}

    def validator(translator: torch.nn.Module, step: int) -> dict[str, float]:
        return {"mAP50": scores[step], "mAP50_95": scores[step] / 2}

    with tiny_registered():
        cfg = tiny_config(tmp_path, val_every=2)
        cfg["val"] = {"metric": "mAP50", "mode": "max"}
        Trainer(cfg, train_data=tiny_pairs(shared_data), validator=validator).fit()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("step ")]
    assert lines == ["step 2  val mAP50 0.1 (best 0.1 @ 2)", "step 4  val mAP50 0.7 (best 0.7 @ 4)",
                     "step 6  val mAP50 0.3 (best 0.7 @ 4)", "step 7  val mAP50 0.2 (best 0.7 @ 4)"]


# ----------------------------------------------------------------------------------------------- 5. side by side


def test_restore_side_by_side_on_real_photos(shared_data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    inputs = _small_photos(shared_data, photos, width=256)  # NIQE (below) needs 192x96 px or more
    out = tmp_path / "out"
    _ok(["restore", "-r", "aodnet", "--in", str(photos), "--out", str(out), "--side-by-side"])
    for src in inputs:
        x, y = read_image(src, dtype=torch.uint8), read_image(out / f"{src.stem}.png", dtype=torch.uint8)
        pic = read_image(out / f"{src.stem}_side_by_side.png", dtype=torch.uint8)
        h, w = x.shape[-2:]
        assert pic.shape[-2] == h + LABEL_STRIP and 2 * w <= pic.shape[-1] <= 2 * w + 16
        assert torch.equal(pic[:, LABEL_STRIP:, :w], x)  # left: the input, pixel for pixel
        assert torch.equal(pic[:, LABEL_STRIP:, -w:], y)  # right: the written result
        assert (pic[:, :LABEL_STRIP, :w] < 128).any()  # a label is drawn above the panel
    report = json.loads((out / "restore.json").read_text())
    assert len(report["side_by_side"]) == len(inputs)
    # evaluate-quality scores the results, not the comparison pictures next to them
    res = runner.invoke(app, ["evaluate-quality", "--pred", str(out), "--json", str(tmp_path / "q.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "q.json").read_text())["count"] == len(inputs)


def test_translate_side_by_side(shared_data: Path, tmp_path: Path) -> None:
    a_dir, _ = write_image_folders(shared_data, tmp_path / "data", size=40)
    run = tmp_path / "run"
    over = [f"data.root={tmp_path / 'data'}", "data.train_A=trainA", "data.train_B=trainB", "data.resize=[20,20]",
            "data.size=16", "train.image_every=0", "train.steps=1", "train.ckpt_every=1"]
    _ok(["fit", str(REPO / "recipes" / "smoke.yaml"), *over, "-o", str(run), "--no-report"])
    dst = tmp_path / "translated"
    _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(dst), "--size", "16", "--device", "cpu",
         "--side-by-side"])
    for src in sorted(a_dir.iterdir()):
        x = read_image(src, dtype=torch.uint8)
        pic = read_image(dst / f"{src.stem}_side_by_side.png", dtype=torch.uint8)
        assert pic.shape[-2] == 40 + LABEL_STRIP and 80 <= pic.shape[-1] <= 96
        assert torch.equal(pic[:, LABEL_STRIP:, :40], x)
        assert torch.equal(pic[:, LABEL_STRIP:, -40:], read_image(dst / src.name, dtype=torch.uint8))


def test_side_by_side_panels_take_the_last_ones_height() -> None:
    a = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)  # e.g. an x2 restorer
    pic = side_by_side([("input", a), ("stage", b), ("output", b)], gap=4)
    assert pic.shape == (3, 40 + LABEL_STRIP, 3 * 60 + 2 * 4) and pic.dtype == torch.uint8
    assert torch.equal(pic[:, LABEL_STRIP:, -60:], b)
    big = side_by_side([("in", b), ("out", b)], max_height=20)
    assert big.shape[-2] == 20 + LABEL_STRIP
    assert np.asarray(pic[:, :LABEL_STRIP]).min() < 128  # labels drawn
