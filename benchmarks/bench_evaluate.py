"""Wall time of whole `taskbridge evaluate` commands: a trained run's row against a restorer's row.

The contract: `evaluate --translator RUN` must not cost more, relative to `evaluate --restorer aodnet`,
than it did before the inference model and the native-resolution protocol (15.2 s vs 13.2 s for 20
DAWN photos, 1.15x). Each command runs as its own process (imports included, as a user pays them),
interleaved over repetitions; medians are reported. `--old-src` times another checkout's code (its
`src/` on PYTHONPATH) side by side, with its own run (`--old-run`) and its own flags (`--old-translator-args`).

    python benchmarks/bench_evaluate.py --run runs/dehaze-det-vat --limit 20 --reps 3 \\
        --old-src ../old-checkout/src --old-run ../old-checkout/runs/dehaze-det-vat --old-translator-args="--translate-size 160"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="trained run folder (this checkout)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dawn_fog"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--old-src", help="another checkout's src/ to time side by side")
    ap.add_argument("--old-run", help="a run trained by that checkout")
    ap.add_argument("--old-translator-args", default="", help="extra flags of the old translator row")
    args = ap.parse_args()
    exe = [sys.executable, "-c", "from taskbridge.cli import main; main()"]
    base = ["evaluate", "--task", "yolov5n", "--data", args.data, "--limit", str(args.limit), "--grid", "0", "--no-baseline"]
    versions = {"this": (REPO / "src", args.run, [])}
    if args.old_src:
        versions["old"] = (Path(args.old_src), args.old_run, shlex.split(args.old_translator_args))
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name, (src, run, extra) in versions.items():
                rows = {"restorer": ["--restorer", "aodnet"], "translator": ["--translator", run, *extra]}
                for row, flags in rows.items():
                    out = Path(tmp) / f"{name}-{row}-{rep}"
                    t = timed([*exe, *base, *flags, "--out", str(out)], src)
                    times.setdefault(f"{name} {row}", []).append(t)
                    print(f"rep {rep} {name:>4} {row:<10} {t:6.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"limit": args.limit, "reps": args.reps, "median_s": med,
              "ratio": {v: med[f"{v} translator"] / med[f"{v} restorer"] for v in versions}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
