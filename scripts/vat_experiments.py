"""Train VaT (and comparison) recipes over seeds, score each on the held-out test split, print the table.

Every number in docs/results.md's VaT and comparison tables comes from this script. Per (recipe, seed) it runs
`taskbridge fit RECIPE seed=S -o runs/tables/<name>-s<S>` (model selection on the recipe's
validation split), then `taskbridge evaluate` of the selected checkpoint on the test split, with the
same settings as the baseline rows (plain degraded input, restorer alone), which are scored once.

    python scripts/vat_experiments.py dehaze --seeds 0 1 2
    python scripts/vat_experiments.py dehaze --recipes dehaze-det-vat-nocycle dehaze-det-vat-nogfm --seeds 0
    python scripts/vat_experiments.py lowlight-cls --seeds 0 1 2
    python scripts/vat_experiments.py lowlight-det --seeds 0 1 2
    python scripts/vat_experiments.py dehaze-compare --seeds 0     # CycleGAN, CUT, FastCUT, ODCR (+ VaT runs)
    python scripts/vat_experiments.py lowlight-cls-compare --seeds 0   # the same on dark CIFAR-10
    python scripts/vat_experiments.py hflow-dehaze --seeds 0 1 2       # Hierarchy Flow, fog -> clear
    python scripts/vat_experiments.py hflow-lowlight-det --seeds 0 1 2 # Hierarchy Flow, dark -> light
    python scripts/vat_experiments.py dehaze --recipes dehaze-det-vat-learn-gateonly --seeds 0 1 2 \\
        --set train.steps=900 --root runs/budget    # recipe overrides for every fit; a root of their own

Each evaluation also scores the translated images (`taskbridge evaluate --quality`: PSNR/SSIM against
the clean image where the degradation is synthetic, NIQE where images are large enough).

Next to each test score the table shows `val <metric>`: the validation score that selected the run's
checkpoint (the best of its validation points, so biased upward by the choice). Recipes are ranked on that
column, never on test; the README's main job is the recipe best on it (docs/results.md §3.1).

The printed table (also runs/tables/<plan>-table.md) covers every run of the plan's recipes found
under --root, so separate invocations (seeds, ablations) add up to one table. Invocations may run side
by side (one per seed): their fits go in parallel, their scoring one at a time (a lock file in --root).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAWN_TEST = ["--task", "yolov5n", "--data", "{data}/dawn_fog", "--subset", "recipes/splits/dawn_fog.json:test",
             "--grid", "0"]
CIFAR_DARK_TEST = ["--task", "cifar-resnet20", "--data", "{data}/cifar10_test_subset", "--subset", "{split}:test",
                   "--degrade", "lowlight"]
RTTS5 = ["person", "bicycle", "car", "motorcycle", "bus"]
PLANS = {
    "dehaze": {
        "recipes": ["dehaze-det-vat"],
        "restorer": "aodnet",
        "metric": "map50",
        "classes": RTTS5,
        "eval": DAWN_TEST,
    },
    "lowlight-det": {
        "recipes": ["lowlight-det-vat"],
        "restorer": "sci-medium",
        "metric": "map50",
        "classes": RTTS5,
        "eval": ["--task", "yolov5n", "--data", "{data}/coco256_street", "--split", "val2017", "--subset",
                 "recipes/splits/coco256_val2017.json:test", "--degrade", "lowlight", "--seed", "0", "--grid", "0"],
        # real dark photos without labels: NIQE of input, restorer and each run's translation
        "real_photos": {"folder": "lowlight_unlabeled_sci", "size": "160"},
    },
    "lowlight-cls": {
        "recipes": ["lowlight-cls-vat"],
        "restorer": "sci-medium",
        "metric": "top1",
        "classes": [],
        "eval": CIFAR_DARK_TEST,
    },
    # the unpaired translators on the VaT dehazing setting (recipes/compare/), next to the VaT runs
    "dehaze-compare": {
        "recipes": ["compare/cyclegan-dehaze-det", "compare/cut-dehaze-det", "compare/fastcut-dehaze-det",
                    "compare/odcr-dehaze-det"],
        "table": ["cyclegan-dehaze-det", "cut-dehaze-det", "fastcut-dehaze-det", "odcr-dehaze-det", "dehaze-det-vat"],
        "restorer": "aodnet",
        "metric": "map50",
        "classes": RTTS5,
        "eval": DAWN_TEST,
    },
    # the same on dark CIFAR-10 (recipes/compare/*-lowlight-cls.yaml), next to the VaT runs
    "lowlight-cls-compare": {
        "recipes": ["compare/cyclegan-lowlight-cls", "compare/cut-lowlight-cls", "compare/fastcut-lowlight-cls",
                    "compare/odcr-lowlight-cls"],
        "table": ["cyclegan-lowlight-cls", "cut-lowlight-cls", "fastcut-lowlight-cls", "odcr-lowlight-cls",
                  "lowlight-cls-vat"],
        "restorer": "sci-medium",
        "metric": "top1",
        "classes": [],
        "eval": CIFAR_DARK_TEST,
    },
}
# Hierarchy Flow on the fog comparison setting and on the low-light detection setting, scored as VaT's
PLANS["hflow-dehaze"] = {**PLANS["dehaze"], "recipes": ["compare/hflow-dehaze-det"]}
PLANS["hflow-lowlight-det"] = {**PLANS["lowlight-det"], "recipes": ["compare/hflow-lowlight-det"]}
QUALITY = ("psnr", "ssim", "niqe", "ssim_input")


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


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best" / "meta.json"


def finished(run_dir: Path, steps: int | None = None) -> bool:
    """True once the fit wrote its final checkpoint (a run still training already has a `best`).

    With `steps` (a `train.steps=N` override) the run must have reached N, not only its own recorded total: a
    copied 300-step run under `--set train.steps=900` is continued to 900, not scored as it stands.
    """
    from taskbridge.checkpoint import CheckpointError, read_meta, resolve_checkpoint

    try:
        meta = read_meta(resolve_checkpoint(run_dir, prefer="last"))
        step, total = int(meta["step"]), int(meta["total_steps"])
    except (CheckpointError, OSError, ValueError, KeyError):
        return False
    if steps is not None and total > steps:
        print(f"note: {run_dir} was trained for {total} steps, not the {steps} asked; scored as it stands "
              "(give it a --root of its own to train the shorter schedule)", flush=True)
    return step >= (total if steps is None or total > steps else steps)


def steps_asked(overrides: list[str]) -> int | None:
    """The `train.steps=N` among the fit overrides (the last one wins, as in `taskbridge fit`), else None."""
    steps = None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "train.steps":
            try:
                steps = int(value)
            except ValueError:
                sys.exit(f"recipe override '{item}': train.steps must be a whole number of steps")
    return steps


def stale(result: Path, run_dir: Path | None) -> bool:
    """Missing, or older than the run's selected checkpoint (scored while the run was still training)."""
    if not result.exists():
        return True
    ckpt = best_checkpoint(run_dir) if run_dir else None
    return bool(ckpt and ckpt.is_file() and result.stat().st_mtime < ckpt.stat().st_mtime)


def evaluate(plan: dict, out: Path, data: str, split: str, extra: list[str], log: Path,
             run_dir: Path | None = None) -> dict:
    """Score once; redone when it lacks the image-quality pass or predates `run_dir`'s best checkpoint."""
    args = [a.format(data=data, split=split) for a in plan["eval"]]
    done = out / "results.json"
    if stale(done, run_dir) or any("quality" not in r for r in json.loads(done.read_text())["runs"].values()):
        run(["taskbridge", "evaluate", *args, *extra, "--quality", "--overwrite", "--out", str(out)], log)
    return json.loads(done.read_text())["runs"]


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """One invocation at a time inside: invocations run side by side score each other's runs and the baselines."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def selected_value(run_dir: Path) -> float | None:
    """The validation score that chose the run's scored checkpoint (`selected_by` in its best meta.json)."""
    from taskbridge.checkpoint import CheckpointError, read_meta

    try:
        return float(read_meta(best_checkpoint(run_dir).parent)["selected_by"]["value"])
    except (CheckpointError, OSError, ValueError, KeyError, TypeError):
        return None


def row(result: dict, plan: dict, run_dir: Path | None = None) -> dict[str, float]:
    """One table row: the test metric, its validation counterpart that selected the checkpoint, classes, quality."""
    r = {plan["metric"]: float(result[plan["metric"]])}
    if run_dir is not None and (val := selected_value(run_dir)) is not None:
        r[f"val {plan['metric']}"] = val
    per = result.get("voc", {}).get("per_class", {})
    r.update({c: float(per[c]["ap"]) for c in plan["classes"] if c in per})
    quality = result.get("quality") or {}
    r.update({q: float(quality[q]) for q in QUALITY if quality.get(q) is not None})
    return r


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def niqe_of(folder: Path, out: Path, log: Path) -> float:
    if not out.is_file():
        run(["taskbridge", "evaluate-quality", "--pred", str(folder), "--metrics", "niqe", "--json", str(out)], log)
    return float(json.loads(out.read_text())["mean"]["niqe"])


def real_photo_niqe(plan: dict, data: str, root: Path, runs: list[Path], log: Path) -> dict[str, list[float]]:
    """NIQE on the plan's unlabelled real photos: as they are, restored, and translated by every run."""
    spec = plan["real_photos"]
    photos = Path(data) / spec["folder"]
    base = root / f"{spec['folder']}-baselines"
    restored = base / plan["restorer"]
    if not restored.is_dir():
        run(["taskbridge", "restore", "--restorer", plan["restorer"], "--in", str(photos), "--out", str(restored)], log)
    scores = {"input": [niqe_of(photos, base / "input_niqe.json", log)],
              plan["restorer"]: [niqe_of(restored, base / f"{plan['restorer']}_niqe.json", log)]}
    for run_dir in runs:
        out = run_dir / "real_photos"
        if stale(out, run_dir) or stale(run_dir / "real_photos_niqe.json", run_dir):
            shutil.rmtree(out, ignore_errors=True)
            (run_dir / "real_photos_niqe.json").unlink(missing_ok=True)
            run(["taskbridge", "translate", "--ckpt", str(run_dir), "--in", str(photos), "--out", str(out),
                 "--size", spec["size"], "--device", "cpu"], log)
        recipe = run_dir.name.rpartition("-s")[0]
        scores.setdefault(recipe, []).append(niqe_of(out, run_dir / "real_photos_niqe.json", log))
    return scores


def run_name(recipe: str) -> str:
    return Path(recipe).name


def recipe_name(arg: str) -> str:
    """Accept `dehaze-det-vat`, `recipes/dehaze-det-vat.yaml` or `compare/cut-dehaze-det` alike."""
    name = arg.removesuffix(".yaml")
    name = name.removeprefix("recipes/")
    if not Path("recipes", f"{name}.yaml").is_file():
        raise SystemExit(f"no recipe recipes/{name}.yaml (from {arg!r}); see `ls recipes`")
    return name


def fit_overrides(positional: list[str], options: list[str]) -> list[str]:
    """The overrides handed to every `taskbridge fit`; a malformed one stops here, before any fit starts."""
    overrides = [*positional, *options]
    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            sys.exit(f"recipe override '{item}' is not KEY=VALUE (e.g. --set train.steps=900)")
    return overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", choices=sorted(PLANS))
    ap.add_argument("--recipes", nargs="*", help="recipe names under recipes/ (default: the plan's main recipe)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data", default="../shared/data", help="data root (as in the recipes)")
    ap.add_argument("--root", default="runs/tables", help="where runs and evaluations go")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_",
                    help="a recipe override for every fit (repeatable), e.g. --set train.steps=900")
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every fit, key=value, written right "
                    "after PLAN (e.g. `lowlight-cls method.translator.gate_channels=1 --root runs/x --seeds 0`; "
                    "after --seeds they would be read as seeds: use --set there)")
    args = ap.parse_args()
    args.overrides = fit_overrides(args.overrides, args.set_)
    plan = PLANS[args.plan]
    root = Path(args.root)
    log = root / f"{args.plan}.log"
    table: dict[str, list[dict[str, float]]] = {}
    run_dirs: list[Path] = []
    split_for_baseline = ""
    recipes = [recipe_name(r) for r in args.recipes] if args.recipes else plan["recipes"]
    scoring_lock = root / f"{args.plan}-scoring.lock"
    steps = steps_asked(args.overrides)
    for recipe in recipes:
        for seed in args.seeds:
            out = root / f"{run_name(recipe)}-s{seed}"
            if not finished(out, steps):  # new, interrupted or shorter than asked: continues from its last step
                run(["taskbridge", "fit", f"recipes/{recipe}.yaml", f"seed={seed}", "-o", str(out), "--no-report",
                     "--resume", "auto", *args.overrides], log)
            split = str(out / "split_pools.json")
            split_for_baseline = split_for_baseline or split
            with exclusive(scoring_lock):
                res = evaluate(plan, out / "test", args.data, split, ["--no-baseline", "--translator", str(out)], log, out)
            table.setdefault(run_name(recipe), []).append(row(next(iter(res.values())), plan, out))
            run_dirs.append(out)
    # fits of invocations run side by side (one per seed) go in parallel; scoring, which reaches the other
    # invocations' runs and the shared baseline rows, is one invocation at a time (the next finds it done)
    with exclusive(scoring_lock):
        # the table also holds every earlier run of this plan's recipes under `root` (other seeds, ablations);
        # their evaluations are brought up to date (quality pass) with the same settings
        fresh = {(run_name(r), s) for r in recipes for s in args.seeds}
        for pattern in plan.get("table", [f"{run_name(plan['recipes'][0])}*"]):
            for run_dir in sorted(root.glob(f"{pattern}-s*")):
                recipe, _, seed = run_dir.name.rpartition("-s")
                if not seed.isdigit() or (recipe, int(seed)) in fresh or not (run_dir / "checkpoints" / "best").is_dir():
                    continue
                if not finished(run_dir):
                    print(f"skipped {run_dir}: still training, or stopped before its last step", flush=True)
                    continue
                split = str(run_dir / "split_pools.json")
                res = evaluate(plan, run_dir / "test", args.data, split, ["--no-baseline", "--translator", str(run_dir)],
                               log, run_dir)
                split_for_baseline = split_for_baseline or split
                table.setdefault(recipe, []).append(row(next(iter(res.values())), plan, run_dir))
                run_dirs.append(run_dir)
        base = evaluate(plan, root / f"{args.plan}-baselines", args.data, split_for_baseline,
                        ["--restorer", plan["restorer"]], log)
    rows = {name: [row(r, plan)] for name, r in base.items()}
    rows.update(table)
    cols = [plan["metric"], f"val {plan['metric']}", *plan["classes"]]
    cols += [q for q in QUALITY if any(q in r for results in rows.values() for r in results)]
    lines = [f"| run | n seeds | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    for name, results in rows.items():
        cells = [fmt([r[c] for r in results if c in r]) for c in cols]
        lines.append(f"| {name} | {len(results) if name in table else '-'} | {' | '.join(cells)} |")
    if "real_photos" in plan:
        with exclusive(scoring_lock):
            niqe = real_photo_niqe(plan, args.data, root, run_dirs, log)
        lines += ["", f"NIQE (lower is better) on the unlabelled real photos of {plan['real_photos']['folder']}:", "",
                  "| run | n seeds | NIQE |", "|---|---|---|"]
        lines += [f"| {name} | {len(v) if name in table else '-'} | {fmt(v)} |" for name, v in niqe.items()]
    text = "\n".join(lines)
    print(text)
    (root / f"{args.plan}-table.md").write_text(text + "\n")
    (root / f"{args.plan}-table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
