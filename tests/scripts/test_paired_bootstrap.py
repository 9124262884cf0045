"""scripts/paired_bootstrap.py: pairs evaluations resample by resample, averages pairs, refuses unpaired ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskbridge.metrics.bootstrap import images_key, summary

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "paired_bootstrap.py"
KEY = images_key(["a.jpg", "b.jpg", "c.jpg"])


def evaluation(folder: Path, score: float, samples: list[float], seed: int = 0, row: str = "translator") -> Path:
    folder.mkdir(parents=True)
    spread = summary(np.array(samples), seed, KEY)
    (folder / "results.json").write_text(json.dumps({"runs": {row: {"map50": score, "bootstrap": {"map50": spread}}}}))
    return folder


def test_pairs_and_their_mean(script, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c0 = evaluation(tmp_path / "c0" / "test", 0.40, [0.40, 0.30, 0.50, 0.45])
    t0 = evaluation(tmp_path / "t0" / "test", 0.43, [0.44, 0.31, 0.52, 0.44])
    c1 = evaluation(tmp_path / "c1" / "test", 0.41, [0.41, 0.35, 0.50, 0.40])
    t1 = evaluation(tmp_path / "t1" / "test", 0.42, [0.40, 0.37, 0.55, 0.42])
    out = script.main(["--pair", str(c0), str(t0), "--pair", str(c1 / "results.json"), str(t1),
                       "--json", str(tmp_path / "pairs.json")])
    assert [p["difference"] for p in out["pairs"]] == pytest.approx([0.03, 0.01])
    assert out["pairs"][0]["p_better"] == pytest.approx(0.75)  # +0.04 +0.01 +0.02 -0.01
    per_resample = (np.array([0.04, 0.01, 0.02, -0.01]) + np.array([-0.01, 0.02, 0.05, 0.02])) / 2
    assert out["mean"]["difference"] == pytest.approx(0.02)
    assert out["mean"]["se"] == pytest.approx(per_resample.std(ddof=1))
    assert out["mean"]["p_better"] == 1.0
    assert json.loads((tmp_path / "pairs.json").read_text())["mean"]["pairs"] == 2
    assert "mean of the 2 pairs" in capsys.readouterr().out


def test_refuses_what_cannot_be_paired(script, tmp_path: Path) -> None:
    c0 = evaluation(tmp_path / "c0", 0.40, [0.40, 0.30, 0.50, 0.45])
    other_seed = evaluation(tmp_path / "t0", 0.43, [0.44, 0.31, 0.52, 0.44], seed=1)
    with pytest.raises(SystemExit, match="not resampled alike"):
        script.main(["--pair", str(c0), str(other_seed)])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "results.json").write_text(json.dumps({"runs": {"translator": {"map50": 0.4}}}))
    with pytest.raises(SystemExit, match="has no bootstrap"):
        script.main(["--pair", str(c0), str(tmp_path / "plain")])
    with pytest.raises(SystemExit, match="no row 'dcp'"):
        script.main(["--pair", str(c0), f"{c0}:dcp"])
    with pytest.raises(SystemExit, match="nowhere: not a taskbridge evaluate results.json"):
        script.main(["--pair", str(c0), str(tmp_path / "nowhere")])
