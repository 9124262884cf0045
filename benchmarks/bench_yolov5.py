"""Time the frozen native YOLOv5n on CPU: forward + backward of the detection loss to the input image.

This is the per-step cost a translator pays to learn through the detector (VaT). Each size runs in a
fresh subprocess so its peak resident memory (getrusage ru_maxrss) is its own.

    python benchmarks/bench_yolov5.py --sizes 320 640 --batch 1 --iters 10
"""

from __future__ import annotations

import argparse
import json

from harness import peak_rss_mb as _peak_rss_mb
from harness import run_children, time_it


def run_one(size: int, batch: int, iters: int, warmup: int, threads: int) -> dict[str, float]:
    import torch

    from taskbridge.registry import TASKS
    from taskbridge.tasks.base import DetectionTargets

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = TASKS.create("yolov5n")
    x = torch.rand(batch, 3, size, size)
    m = 4 * batch  # a few boxes per image, like pseudo-labels
    targets = DetectionTargets(torch.arange(m) % batch, torch.randint(0, task.nc, (m,)),
                               torch.cat((torch.rand(m, 2) * 0.6 + 0.2, torch.rand(m, 2) * 0.3 + 0.05), 1))

    def step() -> None:
        xi = x.clone().requires_grad_(True)
        loss, _ = task.loss(task.raw(xi), targets)
        loss.backward()
        assert xi.grad is not None and torch.isfinite(xi.grad).all()

    def forward() -> None:
        with torch.no_grad():
            task.raw(x)

    out: dict[str, float] = {"size": size, "batch": batch, "threads": torch.get_num_threads(),
                             "setup_rss_mb": _peak_rss_mb()}  # imports + model, before any step
    for name, fn in (("fwd", forward), ("fwd_bwd", step)):
        dt = time_it(fn, iters, warmup)
        out[f"{name}_ms"] = dt * 1e3
        out[f"{name}_img_s"] = batch / dt
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640], help="square input sizes (multiples of 32)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(run_one(a.child, a.batch, a.iters, a.warmup, a.threads)))
        return
    for s in a.sizes:
        if s % 32:
            ap.error(f"--sizes: {s} is not a multiple of 32 (YOLOv5 stride)")
    rows = run_children(__file__, a.sizes, ["--batch", str(a.batch), "--iters", str(a.iters),
                                             "--warmup", str(a.warmup), "--threads", str(a.threads)])
    print(f"YOLOv5n (native, frozen) on CPU, batch {a.batch}, {a.iters} iters after {a.warmup} warm-up")
    print(f"{'size':>5} {'threads':>7} {'fwd ms':>8} {'fwd img/s':>10} {'fwd+bwd ms':>11} {'fwd+bwd img/s':>14} "
          f"{'peak RSS MB':>12} {'setup RSS MB':>13}")
    for r in rows:
        print(f"{r['size']:>5} {r['threads']:>7} {r['fwd_ms']:>8.1f} {r['fwd_img_s']:>10.2f} {r['fwd_bwd_ms']:>11.1f} "
              f"{r['fwd_bwd_img_s']:>14.2f} {r['peak_rss_mb']:>12.0f} {r['setup_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
