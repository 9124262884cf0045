"""One run per folder: a fresh fit never mixes with an old run, a resume never mixes two recipes, stops save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.engine import tiny_config, tiny_pairs, tiny_registered
from taskbridge import checkpoint as ckpt
from taskbridge.cli import app
from taskbridge.config import ConfigError
from taskbridge.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tiny():
    with tiny_registered():
        yield


def _smoke(shared_data: Path, tmp_path: Path) -> list[str]:
    from support.engine import write_image_folders

    write_image_folders(shared_data, tmp_path / "data", size=24)
    return [str(REPO / "recipes" / "smoke.yaml"), f"data.root={tmp_path / 'data'}", "data.train_A=trainA",
            "data.train_B=trainB", "data.resize=[20,20]", "data.size=16", "train.image_every=0", "train.log_every=1"]


def _rows(run: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in r]


def test_a_fresh_fit_refuses_a_folder_that_holds_a_run(shared_data: Path, tmp_path: Path) -> None:
    """The report's case: a long run, then a short one into the same folder used to prune its own new
    checkpoints (keeping the old run's higher step names) and silently restart on --resume auto."""
    base, run = _smoke(shared_data, tmp_path), tmp_path / "R"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", *base, "train.steps=8", "train.ckpt_every=2", "-o", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fit", *base, "train.steps=4", "train.ckpt_every=2", "-o", str(run)])
    assert res.exit_code == 2 and "already holds a run (checkpoint step_0000008, step 8)" in res.output
    assert (run / "checkpoints" / "LAST").read_text().strip() == "step_0000008"  # untouched
    res = runner.invoke(app, ["fit", *base, "train.steps=4", "train.ckpt_every=2", "-o", str(run), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LAST", "step_0000002", "step_0000004"]
    assert _rows(run) == [1, 2, 3, 4]  # only the new run's rows
    res = runner.invoke(app, ["fit", *base, "train.steps=6", "train.ckpt_every=2", "-o", str(run), "--resume", "auto"])
    assert res.exit_code == 0 and '"resumed_from"' in res.output and "step_0000004" in res.output


def test_resume_after_a_hard_kill_logs_each_step_once(shared_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, log_every=1, ckpt_every=2)
    Trainer(cfg, train_data=tiny_pairs(shared_data)).fit(until=3)
    # as after kill -9 between the log of step 3 and its checkpoint: the newest checkpoint is step 2
    (tmp_path / "checkpoints" / "step_0000003").rename(tmp_path / "gone")
    ckpt.write_last_pointer(tmp_path / "checkpoints", "step_0000002")
    assert _rows(tmp_path) == [1, 2, 3]
    Trainer(cfg, train_data=tiny_pairs(shared_data)).fit(resume="auto")
    assert _rows(tmp_path) == [1, 2, 3, 4, 5, 6, 7]


def test_resume_with_another_recipe_is_refused_unless_forced(shared_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    Trainer(cfg, train_data=tiny_pairs(shared_data)).fit(until=2)
    changed = tiny_config(tmp_path)
    changed["optim"]["D"]["lr"] = 0.5
    changed["train"]["steps"] = 9  # a longer schedule is a normal resume
    with pytest.raises(ckpt.CheckpointError, match=r"recipe differs .*optim.D.lr: None -> 0.5.*--force"):
        Trainer(changed, train_data=tiny_pairs(shared_data)).fit(resume="auto")
    with pytest.warns(UserWarning, match="changed recipe"):
        t = Trainer(changed, train_data=tiny_pairs(shared_data))
        t.fit(resume="auto", force=True)
    assert t.step == 9
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg, train_data=tiny_pairs(shared_data)).fit()


@pytest.mark.slow
def test_sigterm_saves_and_stops_like_ctrl_c(shared_data: Path, tmp_path: Path) -> None:
    base, run = _smoke(shared_data, tmp_path), tmp_path / "R"
    cmd = [sys.executable, "-c", "from taskbridge.cli import main; main()", "fit", *base, "train.steps=100000",
           "train.ckpt_every=0", "train.progress=false", "-o", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").is_file() and len(_rows(run)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out[out.index("\n{\n") + 1:out.rindex("}") + 1])  # the JSON summary after the run summary
    assert result["interrupted"] is True and result["step"] >= 3
    last = ckpt.resolve_checkpoint(run, prefer="last")
    assert ckpt.read_meta(last)["step"] == result["step"]  # nothing trained was lost
