"""scripts/vat_reselect.py: picks on validation over the common classes only, reads test only for the table."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vat_reselect.py"


def evaluation(folder: Path, aps: dict[str, tuple[float, int]]) -> None:
    """A results.json as `taskbridge evaluate` writes it, with per-class AP and box counts."""
    folder.mkdir(parents=True)
    per_class = {c: {"ap": ap, "num_gt": n} for c, (ap, n) in aps.items()}
    valid = [ap for ap, n in aps.values() if n]
    result = {"map50": sum(valid) / len(valid), "voc": {"per_class": per_class}}
    (folder / "results.json").write_text(json.dumps({"runs": {"translator": result}}))


def test_common_class_pick_ignores_the_rare_class(script, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "gate-s0"
    out = tmp_path / "evals"
    # step 100: the rare class (4 boxes) lucky; step 200: better on the common classes
    val = {100: {"car": (0.60, 164), "person": (0.25, 10), "bicycle": (0.50, 4)},
           200: {"car": (0.62, 164), "person": (0.30, 10), "bicycle": (0.25, 4)}}
    test = {100: 0.40, 200: 0.43}
    for step in (100, 200):
        (run / "checkpoints" / f"step_{step:07d}").mkdir(parents=True)
        evaluation(out / f"gate-s0-{step}" / "val", val[step])
        evaluation(out / f"gate-s0-{step}" / "test", {"car": (test[step], 300)})
    rows = script.main(["dehaze", str(run), "--min-boxes", "10", "--out", str(out)])
    assert rows[0]["selected_map50"] == 100 and rows[0]["selected_common"] == 200
    assert rows[0]["test_map50_pick"] == 0.40 and rows[0]["test_common_pick"] == 0.43
    assert rows[0]["steps"][0]["classes"] == ["car", "person"]
