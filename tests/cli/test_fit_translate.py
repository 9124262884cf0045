"""CLI: `taskbridge fit` (smoke recipe, resume), `taskbridge translate` (full resolution), recipe data/val."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from support.engine import TINY, tiny_registered, write_image_folders
from taskbridge import checkpoint as ckpt
from taskbridge.cli import app
from taskbridge.config import ConfigError
from taskbridge.data.io import read_image
from taskbridge.data.splits import split_indices
from taskbridge.engine.data import plan_data
from taskbridge.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _tiny_method_registered():
    with tiny_registered():
        yield




def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{args}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res.output


def test_fit_smoke_recipe_then_resume_then_translate(shared_data: Path, tmp_path: Path) -> None:
    """recipes/smoke.yaml (CycleGAN, ngf 8) for 5 CPU steps on 16-px crops of small folders, extend to 6 by --resume,
    then translate a folder at full resolution."""
    a_dir, b_dir = write_image_folders(shared_data, tmp_path / "data", size=40)
    run = tmp_path / "run"
    over = [f"data.root={tmp_path / 'data'}", "data.train_A=trainA", "data.train_B=trainB", "data.resize=[20,20]",
            "data.size=16", "train.image_every=0"]
    out = _ok(["fit", str(REPO / "recipes" / "smoke.yaml"), *over, "-o", str(run)])
    assert "group G:" in out and "group D:" in out and "train data: 5 items" in out
    meta = ckpt.read_meta(run / "checkpoints" / "step_0000005")
    assert meta["step"] == 5 and meta["config"]["method"]["type"] == "cyclegan"
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(torch.tensor(r["loss/G"])) for r in rows)

    out = _ok(["fit", str(REPO / "recipes" / "smoke.yaml"), *over, "train.steps=6", "-o", str(run), "--resume", "auto"])
    assert '"step": 6' in out
    assert (run / "checkpoints" / "LAST").read_text().strip() == "step_0000006"

    dst = tmp_path / "translated"
    _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(dst), "--size", "16", "--device", "cpu"])
    src_files = sorted(p.name for p in a_dir.iterdir())
    assert sorted(p.name for p in dst.iterdir()) == [*src_files, "translate.json"]
    report = json.loads((dst / "translate.json").read_text())
    assert len(report["written"]) == 5 and report["skipped"] == [] and report["model"]["working_size"] == [16, 16]
    x, y = read_image(a_dir / src_files[0]), read_image(dst / src_files[0])
    assert x.shape == y.shape == (3, 40, 40) and not torch.equal(x, y)


def test_fit_errors_are_clear(tmp_path: Path) -> None:
    res = runner.invoke(app, ["fit", str(REPO / "recipes" / "smoke.yaml"), "train.stpes=3"])
    assert res.exit_code == 2 and "stpes" in res.output
    res = runner.invoke(app, ["fit", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "recipe not found" in res.output


def _tiny_recipe(tmp_path: Path, shared_data: Path, **extra: object) -> Path:
    write_image_folders(shared_data, tmp_path / "data", size=32)
    cfg = {
        "name": "tiny-cli", "seed": 1, "output_dir": str(tmp_path / "run"),
        "data": {"root": str(tmp_path / "data"), "train_A": "trainA", "train_B": "trainB", "size": 32,
                 "batch_size": 2, "split": {"fractions": {"train": 0.6, "val": 0.4}, "seed": 0}},
        "method": {"type": TINY},
        "train": {"steps": 3, "log_every": 1, "ckpt_every": 2, "image_every": 3, "device": "cpu"},
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fit_tiny_method_with_split_and_images(shared_data: Path, tmp_path: Path) -> None:
    recipe = _tiny_recipe(tmp_path, shared_data)
    _ok(["fit", str(recipe)])
    run = tmp_path / "run"
    split = json.loads((run / "split_A.json").read_text())
    assert split["counts"] == {"train": 3, "val": 2}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LAST", "step_0000002", "step_0000003"]
    assert (run / "images" / "step_0000003_translated.png").is_file()


def test_cifar_npz_plan_pools_are_disjoint_and_degraded(shared_data: Path) -> None:
    cfg = {"source": "cifar_npz", "root": str(shared_data), "path": "cifar10_test_subset/cifar10_test_first1017.npz",
           "split": {"fractions": {"A": 0.4, "B": 0.4, "val": 0.2}, "seed": 0}, "degradation": {"type": "lowlight"}}
    plan = plan_data(cfg, seed=0)
    ds = plan.train
    assert plan.info["A"] + plan.info["B"] + plan.info["val"] == 1017
    assert len(plan.val_arrays) == plan.info["val"] and ds.a.shape[1:] == (3, 32, 32)
    assert ds.a.mean() < 0.6 * ds.b.mean()  # A is darkened, B clean
    item = ds[0]
    assert set(item) == {"A", "B", "A_path", "B_path"}  # pool A's classes travel only when asked (an oracle)
    labelled = plan_data({**cfg, "labels_A": True}, seed=0)
    batch = labelled.collate([labelled.train[i] for i in (0, 5, 7)])
    pool_a = split_indices(1017, cfg["split"]["fractions"], 0)["A"]
    truth = np.load(shared_data / cfg["path"])["labels"]
    assert batch["A_labels"].tolist() == [int(truth[int(pool_a[i])]) for i in (0, 5, 7)]
    assert torch.equal(batch["A"], torch.stack([ds[i]["A"] for i in (0, 5, 7)]))  # the same images as without
    with pytest.raises(ConfigError, match="degradation: missing"):
        plan_data({**cfg, "degradation": None}, seed=0)
    with pytest.raises(ConfigError, match="sise: unknown key"):
        plan_data({**cfg, "sise": 3}, seed=0)


def test_classification_validation_from_recipe(shared_data: Path, tmp_path: Path) -> None:
    """val: {type: classification} scores the held-out CIFAR pool with the frozen ResNet20 and keeps `best`."""
    cfg = {
        "name": "cls", "seed": 0, "output_dir": str(tmp_path),
        "data": {"source": "cifar_npz", "root": str(shared_data), "path": "cifar10_test_subset/cifar10_test_first1017.npz",
                 "split": {"fractions": {"A": 0.3, "B": 0.3, "val": 0.1, "unused": 0.3}}, "degradation": {"type": "lowlight"},
                 "batch_size": 8},
        "method": {"type": TINY},
        "train": {"steps": 1, "log_every": 1, "ckpt_every": 0, "image_every": 0, "device": "cpu",
                  "progress": False, "tensorboard": False},
        "val": {"type": "classification", "task": {"type": "cifar-resnet20"}, "metric": "top1", "mode": "max"},
    }
    t = Trainer(cfg)
    t.fit()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val"' in r]
    assert len(rows) == 1 and 0.0 <= rows[0]["val/top1"] <= 1.0 and rows[0]["val/num_images"] == 102
    meta = ckpt.read_meta(tmp_path / "checkpoints" / "best")
    assert meta["selected_by"]["split"] == "val" and meta["selected_by"]["metric"] == "top1"
    assert meta["selected_by"]["value"] == rows[0]["val/top1"]
    # the frozen task scores the translated, degraded val pool far below its 91.6 % on clean images
    assert rows[0]["val/top1"] < 0.85
    # the end-of-fit report scores the same split for the plain input and the best translator
    from taskbridge.engine.report import compare_on_validation, format_table
    from taskbridge.evaluation import evaluate_classification
    from taskbridge.registry import TASKS

    report = compare_on_validation(t)
    names = list(report)
    assert names == ["input", "translator (best, step 1)"]  # the tiny method owns no restorer: no restorer row
    # the best checkpoint reloaded is the model validated at step 1, so it scores exactly the same
    assert report[names[1]]["top1"] == rows[0]["val/top1"]
    # the input row is the frozen ResNet20 on the degraded val pool, computed here independently
    direct = evaluate_classification(TASKS.create("cifar-resnet20"), t.data_plan.val_arrays, None,
                                     degrade=t.data_plan.degradation, seed=0, progress=False)
    assert report["input"]["top1"] == direct["top1"] and report["input"]["num_images"] == 102
    table = format_table(report)
    assert "top1" in table and "num_images" not in table
