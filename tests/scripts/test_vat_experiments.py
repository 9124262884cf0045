"""scripts/vat_experiments.py bookkeeping: a run still training must not be scored, and a score taken
from an earlier `best` must be redone (two invocations of the script can share one runs folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vat_experiments.py"


def make_run(root: Path, step: int, total: int) -> Path:
    ck = root / "checkpoints"
    for name, s in (("best", min(step, 100)), (f"step_{step:07d}", step)):
        (ck / name).mkdir(parents=True)
        (ck / name / "meta.json").write_text(json.dumps({"step": s, "total_steps": total}))
    (ck / "LAST").write_text(f"step_{step:07d}\n")
    return root


def test_finished_only_at_the_last_step(script, tmp_path: Path) -> None:
    assert script.finished(make_run(tmp_path / "done", 300, 300))
    assert not script.finished(make_run(tmp_path / "training", 200, 300))
    assert not script.finished(tmp_path / "missing")
    broken = make_run(tmp_path / "broken", 300, 300)
    (broken / "checkpoints" / "LAST").write_text("step_9999999\n")
    assert not script.finished(broken)


def test_a_run_shorter_than_the_steps_asked_is_continued_not_scored(script, tmp_path: Path, capsys) -> None:
    copied = make_run(tmp_path / "copied", 300, 300)  # a finished 300-step run under --set train.steps=900
    assert not script.finished(copied, 900)
    assert script.finished(copied, 300)
    assert script.finished(make_run(tmp_path / "continued", 900, 900), 900)
    longer = make_run(tmp_path / "longer", 900, 900)  # asked for fewer: scored as it stands, with a note
    assert script.finished(longer, 300)
    assert "trained for 900 steps, not the 300 asked" in capsys.readouterr().out


def test_steps_asked_reads_the_last_train_steps_override(script) -> None:
    assert script.steps_asked(["a.b=1"]) is None
    assert script.steps_asked(["train.steps=300", "x=1", "train.steps=900"]) == 900
    with pytest.raises(SystemExit, match="train.steps must be a whole number"):
        script.steps_asked(["train.steps=9e2"])


def test_stale_when_missing_or_older_than_best(script, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 300, 300)
    result = tmp_path / "run" / "test" / "results.json"
    assert script.stale(result, run)
    result.parent.mkdir()
    result.write_text("{}")
    best = script.best_checkpoint(run)
    os.utime(best, (1_000, 1_000))
    os.utime(result, (2_000, 2_000))
    assert not script.stale(result, run)
    os.utime(best, (3_000, 3_000))  # a better checkpoint was selected after the score was taken
    assert script.stale(result, run)
    assert not script.stale(result, None)  # baselines have no checkpoint


@pytest.mark.parametrize("arg", ["dehaze-det-vat", "recipes/dehaze-det-vat.yaml", "dehaze-det-vat.yaml"])
def test_recipe_name_accepts_paths(script, arg: str) -> None:
    assert script.recipe_name(arg) == "dehaze-det-vat"


def test_fit_overrides_join_positional_and_set_and_refuse_malformed(script) -> None:
    assert script.fit_overrides(["a.b=1"], ["train.steps=900", "x=y=z"]) == ["a.b=1", "train.steps=900", "x=y=z"]
    for bad in ("train.steps", "=3"):
        with pytest.raises(SystemExit, match=f"'{bad}' is not KEY=VALUE"):
            script.fit_overrides([], [bad])


def test_row_carries_the_validation_score_that_selected_the_checkpoint(script, tmp_path: Path) -> None:
    plan = {"metric": "map50", "classes": ["car"]}
    result = {"map50": 0.42, "voc": {"per_class": {"car": {"ap": 0.6}}}}
    run = make_run(tmp_path / "run", 300, 300)
    assert script.row(result, plan, run) == {"map50": 0.42, "car": 0.6}  # an older run: no selected_by
    meta = script.best_checkpoint(run)
    meta.write_text(json.dumps({"step": 100, "selected_by": {"split": "dawn_fog/val", "metric": "map50",
                                                             "value": 0.5, "step": 100}}))
    assert script.row(result, plan, run) == {"map50": 0.42, "val map50": 0.5, "car": 0.6}
    assert script.row(result, plan) == {"map50": 0.42, "car": 0.6}  # baselines: no checkpoint
    meta.write_text("{not json")
    assert script.selected_value(run) is None
