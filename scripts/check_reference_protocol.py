"""Check `taskbridge evaluate` against the reference protocol of ../shared/tools/reference_dawn_eval.py.

Runs the reference script as it is (it needs the YOLOv5 package: `pip install -e ".[reference]"`) and
`taskbridge evaluate --task yolov5n --restorer aodnet` on the same folder, then prints per-class AP of
both for the input and the AOD-Net rows and the largest differences. Exit status 1 when a per-class
AP differs by more than 0.01 or a mAP50 by more than 0.003 (the contract's bounds).

    python scripts/check_reference_protocol.py --data ../shared/data/dawn_fog

The reference runs in a process that flushes subnormal floats to zero (AOD-Net's released weights
hold subnormals that make each 1280 px photo take ~10 s on x86); its outputs are bit-identical.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO.parent / "shared" / "tools" / "reference_dawn_eval.py"
CLASSES = ["person", "bicycle", "car", "motorcycle", "bus"]
AP_BOUND, MAP_BOUND = 0.01, 0.003


def reference_row(data: Path, shared: Path, aodnet: bool, tool: Path = TOOL) -> dict[str, float]:
    """Per-class AP and mAP50 printed by the reference script (input, or AOD-Net at native resolution)."""
    args = ["--data", str(data), "--weights", str(shared / "yolov5n_coco" / "yolov5n.pt")]
    if aodnet:
        args += ["--aodnet", str(shared / "aodnet_weights" / "dehazer.pth")]
    run = ("import sys, runpy, torch; torch.set_num_threads(1); torch.set_flush_denormal(True); "
           f"sys.argv = [{str(tool)!r}, *{args!r}]; runpy.run_path({str(tool)!r}, run_name='__main__')")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "HF_HUB_OFFLINE": "1", "YOLOv5_VERBOSE": "False",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env, cwd=data)
    if out.returncode:
        sys.exit(f"the reference script failed:\n{out.stderr[-2000:]}")
    line = out.stdout.strip().splitlines()[-1]  # "<label> gt {...} {per-class AP} mAP50=0.xyz"
    per_class = ast.literal_eval(line[line.index("} {") + 2: line.rindex("}") + 1])
    return {**per_class, "map50": float(line.rsplit("mAP50=", 1)[1])}


def taskbridge_rows(data: Path, out: Path, shared: Path | None = None) -> dict[str, dict[str, float]]:
    """{input, aodnet: per-class AP + map50} from `taskbridge evaluate` (weights from $TASKBRIDGE_WEIGHTS, else `shared`)."""
    cmd = [sys.executable, "-c", "from taskbridge.cli import main; main()", "evaluate", "--task", "yolov5n", "--data",
           str(data), "--restorer", "aodnet", "--grid", "0", "--out", str(out)]
    env = {**os.environ, "TASKBRIDGE_WEIGHTS": os.environ.get("TASKBRIDGE_WEIGHTS", str(shared or REPO.parent / "shared" / "data"))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"taskbridge evaluate failed:\n{proc.stderr[-2000:]}")
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {row: {**{c: v["ap"] for c, v in runs[row]["voc"]["per_class"].items()}, "map50": runs[row]["map50"]}
            for row in ("input", "aodnet")}


def compare(ours: dict[str, dict[str, float]], ref: dict[str, dict[str, float]]) -> tuple[str, bool]:
    """A table of both and whether every difference is inside the bounds."""
    lines = [f"{'row':<18}" + "".join(f"{c:>11}" for c in [*CLASSES, "map50"])]
    ok = True
    for row in ("input", "aodnet"):
        for who, vals in (("reference", ref[row]), ("taskbridge", ours[row])):
            lines.append(f"{row + ' ' + who:<18}" + "".join(f"{vals[c]:>11.3f}" for c in [*CLASSES, "map50"]))
        diff = {c: abs(ours[row][c] - ref[row][c]) for c in [*CLASSES, "map50"]}
        lines.append(f"{row + ' |diff|':<18}" + "".join(f"{diff[c]:>11.4f}" for c in [*CLASSES, "map50"]))
        ok &= max(diff[c] for c in CLASSES) <= AP_BOUND and diff["map50"] <= MAP_BOUND
    return "\n".join(lines), ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dawn_fog")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="weights folder")
    args = ap.parse_args()
    data = args.data.resolve()
    ref = {"input": reference_row(data, args.shared.resolve(), False),
           "aodnet": reference_row(data, args.shared.resolve(), True)}
    with tempfile.TemporaryDirectory() as tmp:
        ours = taskbridge_rows(data, Path(tmp) / "eval", args.shared.resolve())
    table, ok = compare(ours, ref)
    print(table)
    print(f"within bounds (per-class AP {AP_BOUND}, mAP50 {MAP_BOUND}): {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
