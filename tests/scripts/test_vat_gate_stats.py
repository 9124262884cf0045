"""scripts/vat_gate_stats.py: the weights' drift is measured from the run's own initialisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from typer.testing import CliRunner

from taskbridge.cli import app

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vat_gate_stats.py"


def test_rank_correlation_is_spearman_and_nan_for_a_constant(script: ModuleType) -> None:
    x = torch.tensor([0.1, 0.5, 0.2, 0.9])
    assert script.rank_correlation(x, x ** 3) == pytest.approx(1.0)  # monotone, not linear: still 1
    assert script.rank_correlation(x, -x) == pytest.approx(-1.0)
    assert script.rank_correlation(x, torch.tensor([1.0, 2.0, 4.0, 3.0])) == pytest.approx(0.4)  # 1 - 6*6/(4*15)
    assert script.rank_correlation(x, torch.zeros(4)) != script.rank_correlation(x, torch.zeros(4))  # nan


def test_per_photo_table_relates_gate_changes_to_brightness_and_to_each_other(script: ModuleType) -> None:
    levels = torch.tensor([0.2, 0.8, 0.4, 0.6])
    images = levels[:, None, None, None].expand(4, 3, 2, 2).clone()
    restored = images * 0.5  # the restorer changes brighter photos more
    runs = [("a", -levels), ("b", -levels ** 2), ("c", levels)]
    lines = script.per_photo_table(runs, images, restored)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in lines
            if line.startswith("| ") and not line.startswith("| run")}
    assert rows["a"] == ["-0.500", "-1.00", "-1.00"] and rows["c"] == ["+0.500", "+1.00", "+1.00"]
    assert lines[-1].startswith("rho between runs' gate changes (3 pairs): mean -0.33, min -1.00, max +1.00")


def _tiny_run(shared_data: Path, out: Path, lr: float) -> None:
    res = CliRunner().invoke(app, [
        "fit", str(REPO / "recipes" / "lowlight-cls-vat.yaml"), f"data.root={shared_data}", "train.steps=2",
        "data.batch_size=2", "train.val_every=0", "val.type=none", "method.nuq_fit=null",
        "method.mixup=none", f"optim.translator.lr={lr}", "train.progress=false", "train.tensorboard=false",
        "train.device=cpu", "train.image_every=0", "--no-report", "-o", str(out)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"


@pytest.mark.slow
def test_drift_is_zero_for_an_unmoved_run_and_positive_for_a_trained_one(shared_data: Path, tmp_path: Path) -> None:
    _tiny_run(shared_data, tmp_path / "still", 0.0)
    _tiny_run(shared_data, tmp_path / "moved", 1e-2)
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "vat_gate_stats.py"), "--images",
                          str(shared_data / "coco256_street" / "images" / "val2017"), "--size", "32",
                          "--per-photo", str(tmp_path / "still"),
                          str(tmp_path / "moved")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    table, _, rest = res.stdout.partition("Per photo")
    per_photo, _, logs = rest.partition("certain labels / image")
    changes = [line.split("|")[2].strip() for line in per_photo.splitlines() if line.startswith("| /")]
    assert changes[0] == "+0.000" and len(changes) == 2  # the unmoved run's gate equals its start on every photo
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| /")]
    assert len(rows) == 2
    log_rows = [line.split("|") for line in logs.splitlines() if line.startswith("| /")]
    assert len(log_rows) == 2 and all(float(r[2]) >= 0 for r in log_rows)  # labels per image from metrics.jsonl
    still, moved = ([float(c) for c in r[-3:-1]] for r in rows)
    assert still == [0.0, 0.0]  # lr 0: the rebuilt initialisation is exactly the checkpoint
    assert moved[0] > 0 and moved[1] > 0  # lr 1e-2 for two steps moves both parts


def test_a_classification_npz_is_degraded_as_evaluate_degrades_it(script: ModuleType, shared_data: Path,
                                                                     tmp_path: Path) -> None:
    """The gate statistics of a dark CIFAR run are on the very images its accuracy was scored on."""
    from taskbridge.data.splits import save_split
    from taskbridge.evaluation import evaluate_classification
    from taskbridge.evaluation.datasets import load_cifar_npz, restrict_to_subset
    from taskbridge.registry import DEGRADATIONS, TASKS

    data = shared_data / "cifar10_test_subset"
    split = save_split({"test": [str(i) for i in range(3, 303)], "val": ["0", "1"]}, tmp_path / "pools.json")
    seen: list[torch.Tensor] = []
    evaluate_classification(TASKS.create("cifar-resnet20"), restrict_to_subset(load_cifar_npz(data), f"{split}:test"),
                            lambda x: seen.append(x) or x, progress=False, degrade=DEGRADATIONS.create("lowlight"))
    images = script.load_images(data, f"{split}:test", 32, "lowlight")
    assert images.shape == (300, 3, 32, 32) and len(seen) == 2  # two batches of evaluate: seeds 0 and 1
    assert torch.equal(images, torch.cat(seen))
    clean = script.load_images(data, f"{split}:test", 32)
    assert (images.mean() < clean.mean() - 0.1) and script.load_images(data, f"{split}:val", 16).shape == (2, 3, 16, 16)
    with pytest.raises(SystemExit, match="no part 'train'"):
        script.load_images(data, f"{split}:train", 32)
    with pytest.raises(SystemExit, match="--degrade fog2: "):  # an unknown degradation is one line, no traceback
        script.load_images(data, f"{split}:test", 32, "fog2")
    with pytest.raises(SystemExit, match="--degrade is for a classification .npz"):
        script.load_images(shared_data / "coco256_street" / "images" / "val2017", None, 32, "lowlight")
