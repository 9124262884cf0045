"""scripts/vat_gate_stats.py: the weights' drift is measured from the run's own initialisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskbridge.cli import app

REPO = Path(__file__).resolve().parents[2]


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
                          str(tmp_path / "still"),
                          str(tmp_path / "moved")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    table, _, logs = res.stdout.partition("certain labels / image")
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| /")]
    assert len(rows) == 2
    log_rows = [line.split("|") for line in logs.splitlines() if line.startswith("| /")]
    assert len(log_rows) == 2 and all(float(r[2]) >= 0 for r in log_rows)  # labels per image from metrics.jsonl
    still, moved = ([float(c) for c in r[-3:-1]] for r in rows)
    assert still == [0.0, 0.0]  # lr 0: the rebuilt initialisation is exactly the checkpoint
    assert moved[0] > 0 and moved[1] > 0  # lr 1e-2 for two steps moves both parts
