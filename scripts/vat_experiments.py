"""Train VaT recipes over seeds, score each on the held-out test split, and print the results table.

Every number in docs/results.md's VaT tables comes from this script. Per (recipe, seed) it runs
`taskbridge fit RECIPE seed=S -o runs/tables/<name>-s<S>` (model selection on the recipe's
validation split), then `taskbridge evaluate` of the selected checkpoint on the test split, with the
same settings as the baseline rows (plain degraded input, restorer alone), which are scored once.

    python scripts/vat_experiments.py dehaze --seeds 0 1 2
    python scripts/vat_experiments.py dehaze --recipes dehaze-det-vat-nocycle dehaze-det-vat-nogfm --seeds 0
    python scripts/vat_experiments.py lowlight-cls --seeds 0 1 2

The printed table (also runs/tables/<plan>-table.md) covers every run of the plan's recipes found
under --root, so separate invocations (seeds, ablations) add up to one table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

PLANS = {
    "dehaze": {
        "recipes": ["dehaze-det-vat"],
        "restorer": "aodnet",
        "metric": "map50",
        "classes": ["person", "bicycle", "car", "motorcycle", "bus"],
        "eval": ["--task", "yolov5n", "--data", "{data}/dawn_fog", "--subset", "recipes/splits/dawn_fog.json:test",
                 "--grid", "0"],
        "translate": ["--translate-size", "160"],
    },
    "lowlight-cls": {
        "recipes": ["lowlight-cls-vat"],
        "restorer": "sci-medium",
        "metric": "top1",
        "classes": [],
        "eval": ["--task", "cifar-resnet20", "--data", "{data}/cifar10_test_subset", "--subset", "{split}:test",
                 "--degrade", "lowlight"],
        "translate": [],
    },
}


def taskbridge_exe() -> str:
    """The CLI of the environment running this script (not whatever `taskbridge` PATH finds first)."""
    here = Path(sys.executable).parent / "taskbridge"
    found = str(here) if here.is_file() else shutil.which("taskbridge")
    if not found:
        sys.exit("taskbridge CLI not found: run this script with the Python of the environment taskbridge is installed in")
    return found


def run(cmd: list[str], log: Path) -> None:
    if cmd[0] == "taskbridge":
        cmd = [taskbridge_exe(), *cmd[1:]]
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}); see {log}")


def evaluate(plan: dict, out: Path, data: str, split: str, extra: list[str], log: Path) -> dict:
    args = [a.format(data=data, split=split) for a in plan["eval"]]
    if not (out / "results.json").is_file():
        run(["taskbridge", "evaluate", *args, *extra, "--out", str(out)], log)
    return json.loads((out / "results.json").read_text())["runs"]


def row(result: dict, plan: dict) -> dict[str, float]:
    r = {plan["metric"]: float(result[plan["metric"]])}
    per = result.get("voc", {}).get("per_class", {})
    r.update({c: float(per[c]["ap"]) for c in plan["classes"] if c in per})
    return r


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", choices=sorted(PLANS))
    ap.add_argument("--recipes", nargs="*", help="recipe names under recipes/ (default: the plan's main recipe)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data", default="../shared/data", help="data root (as in the recipes)")
    ap.add_argument("--root", default="runs/tables", help="where runs and evaluations go")
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every fit, key=value")
    args = ap.parse_args()
    plan = PLANS[args.plan]
    root = Path(args.root)
    log = root / f"{args.plan}.log"
    table: dict[str, list[dict[str, float]]] = {}
    split_for_baseline = ""
    for recipe in args.recipes or plan["recipes"]:
        for seed in args.seeds:
            out = root / f"{recipe}-s{seed}"
            if not (out / "checkpoints" / "best").is_dir():
                run(["taskbridge", "fit", f"recipes/{recipe}.yaml", f"seed={seed}", "-o", str(out), "--no-report",
                     *args.overrides], log)
            split = str(out / "split_pools.json")
            split_for_baseline = split_for_baseline or split
            res = evaluate(plan, out / "test", args.data, split, ["--no-baseline", "--translator", str(out),
                                                                  *plan["translate"]], log)
            table.setdefault(recipe, []).append(row(next(iter(res.values())), plan))
    # the table also holds every earlier run of this plan's recipes under `root` (other seeds, ablations)
    main_recipe = plan["recipes"][0]
    for run_dir in sorted(root.glob(f"{main_recipe}*-s*")):
        recipe, _, seed = run_dir.name.rpartition("-s")
        done = run_dir / "test" / "results.json"
        if seed.isdigit() and done.is_file() and not (recipe in (args.recipes or plan["recipes"])
                                                      and int(seed) in args.seeds):
            res = json.loads(done.read_text())["runs"]
            table.setdefault(recipe, []).append(row(next(iter(res.values())), plan))
    base = evaluate(plan, root / f"{args.plan}-baselines", args.data, split_for_baseline,
                    ["--restorer", plan["restorer"]], log)
    rows = {name: [row(r, plan)] for name, r in base.items()}
    rows.update(table)
    cols = [plan["metric"], *plan["classes"]]
    lines = [f"| run | n seeds | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    for name, results in rows.items():
        cells = [fmt([r[c] for r in results]) for c in cols]
        lines.append(f"| {name} | {len(results) if name in table else '-'} | {' | '.join(cells)} |")
    text = "\n".join(lines)
    print(text)
    (root / f"{args.plan}-table.md").write_text(text + "\n")
    (root / f"{args.plan}-table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
