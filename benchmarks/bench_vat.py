"""Time VaT on CPU (or a GPU with --device cuda): translator inference (restorer + T_A) and one full training step.

The training step is the whole objective of `methods/vat.py` (pseudo-labels on several views, NUQ,
mixup, the three detection flows through frozen YOLOv5n, the cycle loss) plus the backward pass, with
AOD-Net as the restorer. The NUQ is fitted once on a few clean images before timing. Each size runs in
a fresh subprocess so its peak resident memory is its own (on CUDA also the peak allocated GPU memory;
--amp runs the step under bf16 autocast as `train.amp: true` does).

    python benchmarks/bench_vat.py --sizes 256 512 --iters 3
    python benchmarks/bench_vat.py --device cuda --sizes 256 512 --iters 20 --warmup 3 [--amp]
"""

from __future__ import annotations

import argparse
import json

from harness import peak_rss_mb, run_children, time_it


def real_images(folder: str, n: int, size: int):
    """Real photos (foggy A, clean B), so pseudo-labels exist and every detection flow runs."""
    import torch
    import torch.nn.functional as F

    from taskbridge.data.io import list_images, read_image
    from taskbridge.data.root import resolve_data_path

    files = list_images(resolve_data_path(folder))[:n]
    return torch.cat([F.interpolate(read_image(f)[None], size=(size, size), mode="bilinear") for f in files])


def run_one(size: int, batch: int, iters: int, warmup: int, threads: int, width: int, device: str = "cpu",
            amp: bool = False) -> dict[str, float]:
    import contextlib

    import torch

    from taskbridge.registry import METHODS

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    vat = METHODS.create("vat", task={"type": "yolov5n"}, restorer={"type": "aodnet"}, width=width,
                         global_residual=True, nuq_fit={"folder": "coco8/images", "split": "coco8", "size": 128})
    vat.to(device)
    vat.fit_nuq()
    labels: dict[str, float] = {}
    params = [p for g in vat.optim_groups().values() for p in g]
    opt = torch.optim.AdamW(params, lr=1e-4)
    a, b = real_images("dawn_fog/images", batch, size), real_images("coco256_street/images/train2017", batch, size)
    a, b = a.to(device), b.to(device)
    batch_dict = {"A": a, "B": b, "A_paths": [], "B_paths": []}
    x1 = a[:1]
    cuda = torch.device(device).type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp and cuda else contextlib.nullcontext
    out: dict[str, float] = {"size": size, "batch": batch, "threads": torch.get_num_threads(), "width": width,
                             "device": torch.cuda.get_device_name(device) if cuda else "cpu", "amp": amp and cuda,
                             "translator_params": sum(p.numel() for p in vat.T_A.parameters()),
                             "setup_rss_mb": peak_rss_mb()}

    def infer() -> None:
        with torch.no_grad(), autocast():
            vat.translate(x1)

    def step() -> None:
        opt.zero_grad()
        with autocast():
            parts = vat.training_step(batch_dict, 0)
        labels.update({k: float(v) for k, v in parts.items() if k.startswith("labels/")})
        parts["loss/translator"].backward()
        opt.step()

    dt = time_it(infer, iters, warmup)
    out["infer_ms"], out["infer_img_s"] = dt * 1e3, 1 / dt
    dt = time_it(step, iters, warmup)
    out["step_s"], out["step_img_s"] = dt, batch / dt
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
    out["certain_labels"] = sum(v for k, v in labels.items() if k.endswith("_certain"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square sizes (multiples of 32)")
    ap.add_argument("--batch", type=int, default=4, help="training batch (the reference uses 4)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only), as train.amp: true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    common = ["--batch", str(a.batch), "--iters", str(a.iters), "--warmup", str(a.warmup), "--threads",
              str(a.threads), "--width", str(a.width), "--device", a.device] + (["--amp"] if a.amp else [])
    if a.child is not None:
        print(json.dumps(run_one(a.child, a.batch, a.iters, a.warmup, a.threads, a.width, a.device, a.amp)))
        return
    for s in a.sizes:
        if s % 32:
            ap.error(f"--sizes: {s} is not a multiple of 32 (YOLOv5 stride)")
    rows = run_children(__file__, a.sizes, common)
    if not rows:
        raise SystemExit("every size failed (see above)")
    print(f"VaT (width {a.width}, {rows[0]['translator_params']:,} params in T_A) with AOD-Net + YOLOv5n on {rows[0]['device']}"
          f"{' (bf16 autocast)' if rows[0]['amp'] else ''}, "
          f"{a.iters} iters after {a.warmup} warm-up")
    print(f"{'size':>5} {'threads':>7} {'infer ms':>9} {'infer img/s':>12} {'train step s':>13} "
          f"{'train img/s':>12} {'peak RSS MB':>12} {'peak GPU MB':>12} {'certain labels':>15}")
    for r in rows:
        print(f"{r['size']:>5} {r['threads']:>7} {r['infer_ms']:>9.1f} {r['infer_img_s']:>12.2f} {r['step_s']:>13.2f} "
              f"{r['step_img_s']:>12.2f} {r['peak_rss_mb']:>12.0f} {r['peak_gpu_mb']:>12.0f} {r['certain_labels']:>15.0f}")


if __name__ == "__main__":
    main()
