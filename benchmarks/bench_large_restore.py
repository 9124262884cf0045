"""Peak memory and time of `taskbridge restore` / `translate` on one very large photo (default 12000 x 12000).

The photo is a real DAWN photo upscaled and saved as JPEG; each restorer (and each trained run given
with `--runs`) runs as its own `taskbridge restore` (`translate --ckpt RUN`) process and its peak
resident memory is read from the kernel's accounting of that child (`getrusage(RUSAGE_CHILDREN)`, one
fresh benchmark process per command so the figures do not mix). The contract: under 4 GB for
sci-medium and aodnet at 12000 x 12000.

    python benchmarks/bench_large_restore.py --size 12000 --restorers sci-medium aodnet --runs runs/dehaze-det-vat
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(name: str, photo: Path, tile: int) -> dict:
    """`name` is a registered restorer, or `run:PATH` for a trained run."""
    with tempfile.TemporaryDirectory() as out:
        if name.startswith("run:"):
            command = ["translate", "--ckpt", name[4:], "--in", str(photo.parent), "--out", out]
        else:
            command = ["restore", "-r", name, "--in", str(photo.parent), "--out", out, "--tile", str(tile)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "from taskbridge.cli import main; main()", *command],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"{command[0]} failed:\n{proc.stderr[-2000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
    key = "run" if name.startswith("run:") else "restorer"
    return {key: name.removeprefix("run:"), "peak_rss_gib": round(peak, 2), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=12000)
    ap.add_argument("--restorers", nargs="*", default=["sci-medium", "aodnet"])
    ap.add_argument("--runs", nargs="*", default=[], help="trained run folders, applied with `taskbridge translate`")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--photo", type=Path, default=REPO.parent / "shared" / "data" / "dawn_fog" / "images" / "foggy-002.jpg")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--big", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.big, args.tile)))
        return
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "in" / "large.jpg"
        big.parent.mkdir()
        with Image.open(args.photo) as im:
            im.convert("RGB").resize((args.size, args.size), Image.BILINEAR).save(big, quality=90)
        print(f"{args.size}x{args.size} photo: {big.stat().st_size / 1e6:.1f} MB JPEG", flush=True)
        for r in [*args.restorers, *(f"run:{Path(run).resolve()}" for run in args.runs)]:
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
            out = subprocess.run([sys.executable, __file__, "--child", r, "--big", str(big), "--tile", str(args.tile)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(out.stderr[-2000:])
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
