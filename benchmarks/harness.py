"""Shared bits of the CPU benchmarks: per-size child processes (so each peak RSS is its own) and timing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync() -> None:
    """Wait for queued GPU work, so a CUDA timing measures the kernels and not their launch."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_it(fn: Callable[[], None], iters: int, warmup: int) -> float:
    """Mean seconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync()
    return (time.perf_counter() - t0) / iters


def run_children(script: str, sizes: list[int], args: list[str]) -> list[dict]:
    """Run `script --child SIZE *args` once per size; each child prints one JSON line last."""
    env = dict(os.environ)
    env.setdefault("TASKBRIDGE_WEIGHTS", os.path.join(os.path.dirname(script), "..", "..", "shared", "data"))
    rows = []
    for s in sizes:
        res = subprocess.run([sys.executable, script, "--child", str(s), *args], capture_output=True, text=True,
                             env=env, check=False)
        if res.returncode:  # keep the other sizes; a negative code is a signal (e.g. -9: out of memory)
            print(f"size {s} failed with exit code {res.returncode}:\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows
