"""CPU throughput of the unpaired translation methods at 256x256, batch 1, full size (ngf 64, 9 blocks).

Two numbers per method, images/s (higher is better):
* `G fwd+bwd`: the A->B generator alone, forward + backward of a scalar of its output;
* `G step`: the method's generator-side objective, `training_step` + backward of `loss/G` (both
  CycleGAN generators and cycle, CUT's identity pass and PatchNCE, ODCR's heads/classifier/WPNCE,
  D forward for the GAN term); the D update is not included.
Parameter counts are listed next to them: translator (A->B generator), all generators, D, heads.

    .venv/bin/python benchmarks/bench_translators.py [--size 256] [--iters 3] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from harness import time_it
from taskbridge.registry import METHODS

METHOD_NAMES = ("cyclegan", "cut", "fastcut", "odcr")
SHARED = Path(os.environ.get("TASKBRIDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def real_batch(size: int, batch: int) -> dict[str, torch.Tensor]:
    """Foggy DAWN photos as A and clean COCO photos as B (random tensors if the data is absent)."""
    from taskbridge.data.io import list_images, read_image

    def load(folder: Path) -> torch.Tensor:
        if not folder.is_dir():
            return torch.rand(batch, 3, size, size)
        files = list_images(folder)[:batch]
        return torch.cat([F.interpolate(read_image(p)[None], size=(size, size), mode="bilinear", antialias=True) for p in files]).clamp(0, 1)

    return {"A": load(SHARED / "dawn_fog" / "images"), "B": load(SHARED / "coco256_street" / "images" / "train2017")}


def count(params) -> int:
    return sum(p.numel() for p in params)


def bench(name: str, batch: dict[str, torch.Tensor], warmup: int, iters: int) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    m = METHODS.create(name)
    m.train()
    gen = m.G_A if name == "cyclegan" else m.G
    gens = [m.G_A, m.G_B] if name == "cyclegan" else [m.G]
    discs = [m.D_A, m.D_B] if name == "cyclegan" else [m.D]
    heads = [] if name == "cyclegan" else list(m.nce.parameters()) + (list(m.dwfc.parameters()) if name == "odcr" else [])
    x = batch["A"] * 2 - 1

    def g_only() -> None:
        gen.zero_grad(set_to_none=True)
        gen(x).mean().backward()

    def g_step() -> None:
        m.zero_grad(set_to_none=True)
        m.training_step(batch, 0)["loss/G"].backward()

    n = x.shape[0]
    t_g, t_step = time_it(g_only, iters, warmup), time_it(g_step, iters, warmup)
    return {
        "method": name,
        "translator_params_M": round(count(gen.parameters()) / 1e6, 3),
        "generators_params_M": round(count(p for g in gens for p in g.parameters()) / 1e6, 3),
        "D_params_M": round(count(p for d in discs for p in d.parameters()) / 1e6, 3),
        "heads_params_M": round(count(heads) / 1e6, 3),
        "G_fwd_bwd_img_s": round(n / t_g, 3),
        "G_step_img_s": round(n / t_step, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = real_batch(args.size, args.batch)
    env = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    print(f"# {args.size}x{args.size}, batch {args.batch}, CPU, {env}, mean of {args.iters} after {args.warmup} warm-up")
    header = f"{'method':9} {'G params (M)':>12} {'all G (M)':>9} {'D (M)':>6} {'heads (M)':>9} {'G fwd+bwd img/s':>15} {'G step img/s':>12}"
    print(header)
    rows = []
    for name in args.methods:
        r = bench(name, batch, args.warmup, args.iters)
        rows.append(r)
        print(
            f"{name:9} {r['translator_params_M']:>12.3f} {r['generators_params_M']:>9.3f} {r['D_params_M']:>6.3f} "
            f"{r['heads_params_M']:>9.3f} {r['G_fwd_bwd_img_s']:>15.3f} {r['G_step_img_s']:>12.3f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
