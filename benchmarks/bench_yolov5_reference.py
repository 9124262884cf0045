"""Native YOLOv5n inference path vs the fused reference package, side by side on CPU.

Ours is `YOLOv5Task.fast_model()` (Conv+BN folded, in-place SiLU, exact separable max-pool, head GEMMs
writing the decode layout, in-place decode: what `predict` runs). The reference is the `yolov5` PyPI package (7.0.14, extra `reference`) loading the
original pickled checkpoint with `attempt_load(..., fuse=True)`, the loader its DetectMultiBackend uses.
Its fusion is a silent no-op on this checkpoint: the pickle holds `models.common.Conv` (the package adds
its own folder to sys.path) while `Model.fuse()` tests `isinstance(m, yolov5.models.common.Conv)`, a
different class object, so all 57 BatchNorms stay. We therefore fold them ourselves with the package's
own `fuse_conv_and_bn` + `forward_fuse` (what `fuse()` meant to do): that is `ref`, the bar; the model as
`attempt_load` returns it is timed too (`ref as loaded`).

All get the same letterboxed photo, batch 1, under `torch.no_grad`. Each repetition runs each compared
pair back to back (which side goes first alternates), so a burst of load from other processes hits both
sides alike; the table gives medians over `--reps`. Paths:

* fwd+decode: ours `fast_model()(x)` vs reference `model(x)` (its Detect decodes in eval mode);
* predict: plus NMS at detect.py settings (ours `task.predict`, reference `utils.general.non_max_suppression`);
* ours unfused: `task.candidates(x)`, the differentiable training path, for scale.

The max|diff| line compares the outputs of one call: raw head tensors and decoded candidates (ours vs
reference), ours fast vs ours training path (raw), and the post-NMS boxes.

    TASKBRIDGE_WEIGHTS=../shared/data .venv/bin/python benchmarks/bench_yolov5_reference.py \\
        [--shapes 640x640 320x640] [--reps 9] [--warmup 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_IMAGE = SHARED / "dawn_fog" / "images" / "foggy-001.jpg"
CONF, IOU, MAX_DET = 0.25, 0.45, 1000  # detect.py settings


def load_reference(ckpt: Path) -> torch.nn.Module:
    """The reference model as `attempt_load(fuse=True)` returns it (it unpickles model classes, offline)."""
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "HF_HUB_OFFLINE": "1",
           "YOLO_CONFIG_DIR": tempfile.mkdtemp(prefix="ultralytics-")}
    os.environ.update(env)
    from yolov5.models.experimental import attempt_load

    return attempt_load(str(ckpt.resolve()), device="cpu", fuse=True).float().eval()


def fuse_reference(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy with every Conv+BN folded by the package's own helper (matched by duck type, see the module
    docstring); returns (copy, number of BatchNorms folded)."""
    from yolov5.utils.torch_utils import fuse_conv_and_bn

    fused, n = copy.deepcopy(model), 0
    for m in fused.modules():
        if hasattr(m, "bn") and hasattr(m, "forward_fuse"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
            n += 1
    return fused, n


def parse_shape(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    shape = (int(h), int(w or h))
    if shape[0] % 32 or shape[1] % 32:
        raise argparse.ArgumentTypeError(f"shape {text}: height and width must be multiples of 32")
    return shape


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, thread-CPU ms) of one call. With one intra-op thread all the work runs on this thread,
    so its CPU time leaves out time the scheduler gave to other processes (wall time does not)."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3


def interleaved(pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], reps: int,
                warmup: int) -> dict[str, dict[str, list[float]]]:
    """Per label, ms of each repetition of ours and the reference, run back to back (which one goes
    first alternates), so a burst of load from other processes hits both sides of a pair alike."""
    for ours, ref in pairs.values():
        for _ in range(warmup):
            ours(), ref()
    times = {label: {k: [] for k in ("ours_wall", "ours_cpu", "ref_wall", "ref_cpu")} for label in pairs}
    for r in range(reps):
        for label, (ours, ref) in pairs.items():
            order = (("ours", ours), ("ref", ref)) if r % 2 == 0 else (("ref", ref), ("ours", ours))
            for side, fn in order:
                wall, cpu = timed(fn)
                times[label][f"{side}_wall"].append(wall)
                times[label][f"{side}_cpu"].append(cpu)
    return times


def compare(times: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Per pair: median ms (wall, CPU), their ratio, and the median of the per-repetition wall ratios."""
    rows = []
    for label, t in times.items():
        row: dict[str, Any] = {"path": label}
        for kind in ("wall", "cpu"):
            row[f"ours_{kind}_ms"] = statistics.median(t[f"ours_{kind}"])
            row[f"ref_{kind}_ms"] = statistics.median(t[f"ref_{kind}"])
            row[f"ratio_{kind}"] = row[f"ours_{kind}_ms"] / row[f"ref_{kind}_ms"]
        row["ratio_wall_paired"] = statistics.median(a / b for a, b in zip(t["ours_wall"], t["ref_wall"], strict=True))
        row["ours_min_ms"], row["ref_min_ms"] = min(t["ours_wall"]), min(t["ref_wall"])
        row["ratio_min"] = row["ours_min_ms"] / row["ref_min_ms"]
        rows.append(row)
    return rows


def max_diff(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor):
        return float((a - b).abs().max())
    return max(max_diff(x, y) for x, y in zip(a, b, strict=True))


def measure(task: Any, ref: torch.nn.Module, ref_loaded: torch.nn.Module, image: torch.Tensor,
            shape: tuple[int, int], reps: int, warmup: int) -> dict[str, Any]:
    from yolov5.utils.general import non_max_suppression as ref_nms

    from taskbridge.data.transforms import letterbox

    x = letterbox(image, shape, auto=False)[0][None].contiguous()
    fast = task.fast_model()
    with torch.no_grad():
        ref_pred, ref_raw = ref(x)
        ours_pred, _ = fast(x)
        ours_raw, train_raw = fast.raw(x), task.raw(x)
        ref_det = ref_nms(ref(x)[0], CONF, IOU, max_det=MAX_DET)[0]
        ours_det = task.predict(x, CONF, IOU, MAX_DET)[0]
        ours_fwd, ref_fwd = (lambda: fast(x)), (lambda: ref(x))
        pairs = {  # row label: (ours, reference)
            "fwd+decode": (ours_fwd, ref_fwd),
            "predict": (lambda: task.predict(x, CONF, IOU, MAX_DET),
                        lambda: ref_nms(ref(x)[0], CONF, IOU, max_det=MAX_DET)),
            "fwd+decode vs ref as loaded": (ours_fwd, lambda: ref_loaded(x)),
            "ours unfused (training path)": (lambda: task.candidates(x), ref_fwd),
        }
        times = interleaved(pairs, reps, warmup)
    return {
        "shape": list(shape), "pairs": compare(times), "times_ms": times,
        "max_diff_raw_vs_ref": max_diff(ours_raw, ref_raw),
        "max_diff_decoded_vs_ref": max_diff(ours_pred, ref_pred),
        "max_diff_raw_fast_vs_train": max_diff(ours_raw, train_raw),
        "detections": {"ours": len(ours_det), "ref": len(ref_det)},
        "max_diff_boxes_vs_ref": max_diff(ours_det.boxes, ref_det[:, :4]) if len(ours_det) == len(ref_det) else None,
    }


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "cores": os.cpu_count()}


def table(rows: list[dict[str, Any]], reps: int, warmup: int) -> str:
    out = [f"YOLOv5n CPU, batch 1, {torch.get_num_threads()} thread(s), {reps} interleaved pairs after {warmup} "
           f"warm-up; ref = yolov5 7.0.14 with Conv+BN folded; ratio = ours / ref",
           f"{'shape':>8}  {'path':<29} {'ours ms':>8} {'ref ms':>8} {'ratio':>6} {'paired':>6}  "
           f"{'min ratio':>9} {'cpu ratio':>9}"]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        for p in r["pairs"]:
            out.append(f"{shape:>8}  {p['path']:<29} {p['ours_wall_ms']:>8.1f} {p['ref_wall_ms']:>8.1f} "
                       f"{p['ratio_wall']:>6.3f} {p['ratio_wall_paired']:>6.3f}  {p['ratio_min']:>9.3f} "
                       f"{p['ratio_cpu']:>9.3f}")
        out.append(f"{shape:>8}  max|diff|: raw vs ref {r['max_diff_raw_vs_ref']:.2e}, decoded vs ref "
                   f"{r['max_diff_decoded_vs_ref']:.2e} px, raw fast vs training path "
                   f"{r['max_diff_raw_fast_vs_train']:.2e}; detections ours {r['detections']['ours']} ref "
                   f"{r['detections']['ref']}, max|box diff| {r['max_diff_boxes_vs_ref']}")
    out.append("ms and ratio: medians of wall time; paired: median of per-pair ratios; min ratio: fastest ours / "
               "fastest ref; cpu ratio: of median thread-CPU times (leave out time given to other processes)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=[(640, 640), (320, 640)],
                    help="HxW network inputs (multiples of 32); the photo is letterboxed to each")
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--checkpoint", type=Path, default=SHARED / "yolov5n_coco" / "yolov5n.pt",
                    help="the original pickled yolov5n.pt for the reference")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", type=Path, default=None, help="also write settings, environment and rows here")
    a = ap.parse_args(argv)
    os.environ.setdefault("TASKBRIDGE_WEIGHTS", str(SHARED))
    torch.set_num_threads(a.threads)
    from taskbridge.data.io import read_image
    from taskbridge.registry import TASKS

    task, ref_loaded = TASKS.create("yolov5n"), load_reference(a.checkpoint)
    ref, n_folded = fuse_reference(ref_loaded)
    print(f"reference: folded {n_folded} Conv+BN pairs that attempt_load(fuse=True) left unfused")
    image = read_image(a.image)
    rows = [measure(task, ref, ref_loaded, image, s, a.reps, a.warmup) for s in a.shapes]
    print(table(rows, a.reps, a.warmup))
    if a.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
        a.json.write_text(json.dumps({"settings": settings, "env": environment(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
