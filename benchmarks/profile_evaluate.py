"""Where the loop of `taskbridge evaluate` spends its time: detector forward, the rest of `task.predict`
(decode + NMS), waiting for the next photo, and everything else (letterbox when done in the main
process, box mapping, bookkeeping).

It runs `evaluate_detection` itself (the plain `evaluate --task ... --data ...` row: no stage, no
degradation) on the DAWN photos, once per `--workers` value, after one untimed warm-up prediction. The
forward is the time inside the outermost `nn.Module` calls made during `task.predict`, found with global
module hooks, so it follows whatever module the task runs (fused or not); a few microseconds per module
call are added by the hooks. The goal of issue 16: >= 75 % of the loop in the forward on CPU. With
readers, the model runs on fewer torch threads (`evaluation.loader.main_threads`); both are printed.

    python benchmarks/profile_evaluate.py --workers 0 --workers 1 --json runs/profile_evaluate.json
    python benchmarks/profile_evaluate.py --limit 40 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """Seconds inside `task.predict` and inside the outermost module forwards it makes."""

    def __init__(self) -> None:
        self.predict = 0.0
        self.forward = 0.0
        self.calls = 0
        self._in_predict = False
        self._depth = 0
        self._t = 0.0

    def wrap_predict(self, task: torch.nn.Module) -> None:
        original = task.predict

        def predict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            self._in_predict = True
            try:
                return original(*args, **kwargs)
            finally:
                self._in_predict = False
                self.predict += time.perf_counter() - t
                self.calls += 1

        task.predict = predict  # an instance attribute: evaluate_detection calls task.predict(...)

    def hook_modules(self) -> list:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def pre(module, args):  # noqa: ANN001, ANN202
            if self._in_predict:
                if self._depth == 0:
                    self._t = time.perf_counter()
                self._depth += 1

        def post(module, args, out):  # noqa: ANN001, ANN202
            if self._in_predict and self._depth:
                self._depth -= 1
                if self._depth == 0:
                    self.forward += time.perf_counter() - self._t

        return [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]


def profile(task_name: str, data: str, limit: int | None, workers: int) -> dict:
    from taskbridge.evaluation import DetectionFolder, DetectionProtocol, evaluate_detection
    from taskbridge.evaluation.loader import main_threads
    from taskbridge.registry import TASKS

    task = TASKS.create(task_name).eval()
    dataset = DetectionFolder(data)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    with torch.no_grad():  # warm-up: lazily built inference copies, first-call allocations
        lb, _ = DetectionProtocol().letterbox(dataset[0].image, int(getattr(task, "stride", 32)))
        task.predict(lb[None])
    clock = Clock()
    clock.wrap_predict(task)
    hooks = clock.hook_modules()
    timings: dict[str, float] = {}
    load0 = os.getloadavg()[0]
    try:
        res = evaluate_detection(task, dataset, None, progress=False, limit=n, coco=False, num_workers=workers,
                                 timings=timings)
    finally:
        for h in hooks:
            h.remove()
    loop = timings["loop"]
    frac = {"forward": clock.forward / loop, "predict": clock.predict / loop, "data_wait": timings["data"] / loop}
    frac["rest"] = 1.0 - frac["predict"] - frac["data_wait"]
    return {
        "workers": workers, "torch_threads_in_loop": main_threads(workers), "images": res["num_images"],
        "loop_s": round(loop, 3),
        "images_per_s": round(res["num_images"] / loop, 2),
        "ms_per_image": {k: round(1e3 * v / max(1, res["num_images"]), 2) for k, v in
                         {"forward": clock.forward, "predict": clock.predict, "data_wait": timings["data"],
                          "loop": loop}.items()},
        "fraction": {k: round(v, 4) for k, v in frac.items()},
        "map50": res["map50"], "per_class_ap": {c: v["ap"] for c, v in res["voc"]["per_class"].items()},
        "loadavg_1min": {"before": round(load0, 2), "after": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    from taskbridge.evaluation.loader import default_workers

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="yolov5n")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dawn_fog"))
    ap.add_argument("--limit", type=int, default=None, help="first N photos (default: all 200)")
    ap.add_argument("--workers", type=int, action="append",
                    help=f"reader processes (repeatable; default: 0 and default_workers() = {default_workers()})")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    os.environ.setdefault("TASKBRIDGE_WEIGHTS", str(REPO.parent / "shared" / "data"))
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [profile(args.task, args.data, args.limit, w) for w in (args.workers or sorted({0, default_workers()}))]
    out = {"task": args.task, "data": args.data, "limit": args.limit, "torch_threads": torch.get_num_threads(),
           "cpus": len(os.sched_getaffinity(0)), "default_workers": default_workers(), "torch": torch.__version__,
           "runs": runs, "script_s": round(time.perf_counter() - T_START, 2)}
    for r in runs:
        f = r["fraction"]
        print(f"workers {r['workers']} (model on {r['torch_threads_in_loop']} threads): {r['images']} images, {r['images_per_s']:.2f} img/s in the loop; "
              f"forward {f['forward']:.1%}, predict {f['predict']:.1%}, waiting for data {f['data_wait']:.1%}, "
              f"rest {f['rest']:.1%}; mAP50 {r['map50']:.4f} (load avg {r['loadavg_1min']['before']} -> "
              f"{r['loadavg_1min']['after']})", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if len({json.dumps(r["per_class_ap"]) for r in runs}) > 1:
        sys.exit("per-class AP differs between worker counts")


if __name__ == "__main__":
    main()
