"""Select each run's checkpoint again on validation with a metric rare classes cannot swing, and score it on test.

DAWN's validation split has 4 bicycle boxes: one bicycle detection moves validation mAP50 by 6 points, more
than the effects being selected for (docs/results.md §3.1, "How sure are these differences"). This scores every
periodic checkpoint of the given runs on the validation and test photos (`taskbridge evaluate`, the settings of
scripts/vat_experiments.py, with `--bootstrap`), then picks per run the checkpoint with the best validation
mAP50 over the classes that have at least `--min-boxes` ground-truth boxes on the validation photos (what
`val: {metric: map50_common, min_boxes: N}` selects during a fit), next to the usual mAP50 pick:

    python scripts/vat_reselect.py dehaze runs/tables/dehaze-det-vat-learn-gateonly-s{0,1,2,3,4,5} --min-boxes 10

Evaluations go to <out>/<run>-<step>/<split>/ and are reused when present. Test scores are read only for
the table; no choice uses them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
from pathlib import Path

from taskbridge.metrics.detection import common_class_map


def experiments_module():  # noqa: ANN201
    """scripts/vat_experiments.py, for its plans (evaluation settings) and its command runner."""
    path = Path(__file__).with_name("vat_experiments.py")
    spec = importlib.util.spec_from_file_location("vat_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoints(run: Path) -> list[Path]:
    found = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[-1]))
    if not found:
        sys.exit(f"{run}: no checkpoints/step_* (a run folder written by `taskbridge fit`)")
    return found


def score(ex, plan: dict, ckpt: Path, split: str, out: Path, data: str, log: Path) -> dict:  # noqa: ANN001
    """The checkpoint's evaluation on one split (reused when already written)."""
    done = out / "results.json"
    if not done.is_file():
        args = [a.format(data=data, split="") for a in plan["eval"]]
        args = [re.sub(r":test$", f":{split}", a) for a in args]
        ex.run(["taskbridge", "evaluate", *args, "--no-baseline", "--translator", str(ckpt), "--bootstrap", "1000",
                "--overwrite", "--out", str(out)], log)
    return json.loads(done.read_text())["runs"]["translator"]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", choices=["dehaze", "lowlight-det"])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--min-boxes", type=int, default=10, help="classes with fewer validation boxes are left out")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path, default=Path("runs/bootstrap/ckpt"))
    args = ap.parse_args(argv)
    ex = experiments_module()
    plan = ex.PLANS[args.plan]
    log = args.out / "reselect.log"
    rows = []
    for run in args.runs:
        steps = []
        for ckpt in checkpoints(run):
            step = int(ckpt.name.split("_")[-1])
            val, test = (score(ex, plan, ckpt, split, args.out / f"{run.name}-{step}" / split, args.data, log)
                         for split in ("val", "test"))
            common, kept = common_class_map(val["voc"], args.min_boxes)
            steps.append({"step": step, "val": val["map50"], "val_common": common, "test": test["map50"], "classes": kept})
        by_map = max(steps, key=lambda s: s["val"])  # first of equals, as the trainer keeps the first best
        by_common = max(steps, key=lambda s: s["val_common"])
        rows.append({"run": run.name, "steps": steps, "selected_map50": by_map["step"], "test_map50_pick": by_map["test"],
                     "selected_common": by_common["step"], "test_common_pick": by_common["test"]})
    kept = rows[0]["steps"][0]["classes"]
    print(f"validation classes with >= {args.min_boxes} boxes: {', '.join(kept)}")
    print(f"{'run':<44}{'val mAP50 per step':<26}{'val common per step':<26}{'pick':>12}{'test':>14}")
    for r in rows:
        vals = " ".join(f"{s['val']:.3f}" for s in r["steps"])
        commons = " ".join(f"{s['val_common']:.3f}" for s in r["steps"])
        print(f"{r['run']:<44}{vals:<26}{commons:<26}{r['selected_map50']:>5} / {r['selected_common']:<5}"
              f"{r['test_map50_pick']:>7.3f} / {r['test_common_pick']:.3f}")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"-s\d+$", "", r["run"]), []).append(r)
    for name, rs in groups.items():
        for key, label in (("test_map50_pick", "mAP50 pick"), ("test_common_pick", "common pick")):
            values = [r[key] for r in rs]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            print(f"{name}: test mAP50, {label}: {statistics.mean(values):.3f}{spread} ({len(values)} runs)")
    return rows


if __name__ == "__main__":
    main()
