"""scripts/vat_seed_effects.py: the intervals agree with scipy's tests, the recipe x seed decomposition
splits an additive table exactly, and runs are read back from their scored results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vat_seed_effects.py"


def scored_run(root: Path, name: str, map50: float) -> None:
    (root / name / "test").mkdir(parents=True)
    (root / name / "test" / "results.json").write_text(json.dumps({"runs": {"translator": {"map50": map50}}}))


def test_intervals_are_scipys(script) -> None:
    a, b = [0.41, 0.43, 0.40, 0.42], [0.40, 0.41, 0.41, 0.405]
    n, diff, half = script.paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    ci = stats.ttest_rel(a, b).confidence_interval()
    assert n == 4 and diff == pytest.approx((ci.low + ci.high) / 2) and half == pytest.approx((ci.high - ci.low) / 2)
    diff, half = script.welch_difference(a, b[:3])
    ci = stats.ttest_ind(a, b[:3], equal_var=False).confidence_interval()
    assert diff == pytest.approx((ci.low + ci.high) / 2) and half == pytest.approx((ci.high - ci.low) / 2)


def test_two_way_splits_an_additive_table_into_recipe_and_seed(script) -> None:
    recipe, seed = {"a": 0.0, "b": 0.02, "c": -0.01}, {0: 0.01, 1: -0.01, 2: 0.0, 3: 0.03}
    table = {r: {s: 0.4 + dr + ds for s, ds in seed.items()} for r, dr in recipe.items()}
    parts = script.two_way(table)
    assert parts["residual"][0] == pytest.approx(0.0, abs=1e-9)
    ss_r = 4 * sum((v - sum(recipe.values()) / 3) ** 2 for v in recipe.values())
    ss_s = 3 * sum((v - sum(seed.values()) / 4) ** 2 for v in seed.values())
    assert parts["recipe"][0] == pytest.approx(ss_r / (ss_r + ss_s))
    table["c"][0] += 0.005  # noise: the residual takes a share, the F tests are finite
    parts = script.two_way(table)
    assert 0 < parts["residual"][0] < 0.1 and 0 < parts["seed"][1] < 0.05
    with pytest.raises(ValueError, match="needs >= 2 recipes"):
        script.two_way({"a": {0: 0.4, 1: 0.41}})


def test_runs_are_read_back_and_paired_by_seed(script, tmp_path: Path, capsys) -> None:
    for s, (ctl, trained) in enumerate([(0.40, 0.42), (0.41, 0.42), (0.42, 0.45)]):
        scored_run(tmp_path, f"vat-step0-s{s}", ctl)
        scored_run(tmp_path, f"vat-s{s}", trained)
    scored_run(tmp_path, "vat-s9", 0.30)
    (tmp_path / "vat-s7").mkdir()  # not scored yet: ignored
    assert script.read_scores(tmp_path, "vat", None) == {0: 0.42, 1: 0.42, 2: 0.45, 9: 0.30}
    assert script.main(["--root", str(tmp_path), "--control", "vat-step0", "--seeds", "0,1,2", "vat"]) == 0
    out = capsys.readouterr().out
    assert "| vat | 0,1,2 | 0.430 ± 0.017 |" in out and "+0.020 ± 0.025 (3)" in out
    assert script.main(["--root", str(tmp_path), "--control", "nothing", "vat"]) == 2
    assert "no scored run" in capsys.readouterr().err
