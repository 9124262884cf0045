"""Hierarchy Flow: our network against the public code's, side by side, at equal configuration.

Both networks are built with the same configuration (default: HF, expansions [10, 4] = out_channels
[30, 120], learned fusion weight), ours in the official reverse form with the official weights copied
in, so the two compute the same function (checked: largest output difference printed). Timings are
interleaved (official, ours, official, ours, ...) in one process and one thread, batch 1, 256 x 256
content and style images; `forward` = translate (Style-Net + flow forward + reverse), `fwd+bwd` adds
the backward pass of the output's mean. Median over `--reps` repetitions. FLOPs counted by
torch.utils.flop_counter (2 x MACs of conv / matmul), parameters by module.

The public code is not a package: pass its model/network/hf.py (e.g. from a clone of
github.com/WeichenFan/HierarchyFlow at e50f6f8); it is imported from that path, nothing is copied.

    .venv/bin/python benchmarks/bench_hierarchy_flow.py --official /path/to/HierarchyFlow/model/network/hf.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from taskbridge.translators.hierarchy_flow import HierarchyFlow, from_official_state_dict


def load_official(path: Path) -> type:
    spec = importlib.util.spec_from_file_location("hierarchy_flow_official", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.HierarchyFlow


def once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, required=True, help="the public code's model/network/hf.py")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--expansions", type=int, nargs="+", default=[10, 4])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels, c = [], 3
    for e in args.expansions:
        c *= e
        channels.append(c)
    official = load_official(args.official)(out_channels=channels, weight_type="learned")
    ours = HierarchyFlow(expansions=args.expansions, reverse="official")
    ours.load_state_dict(from_official_state_dict(official.state_dict()), strict=True)
    content, style = torch.rand(1, 3, args.size, args.size), torch.rand(1, 3, args.size, args.size)
    runs = {
        ("official", "forward"): lambda: official(content, style),
        ("ours", "forward"): lambda: ours.translate(content, ours.style_code(style)),
        ("official", "fwd+bwd"): lambda: official(content, style).mean().backward(),
        ("ours", "fwd+bwd"): lambda: ours.translate(content, ours.style_code(style)).mean().backward(),
    }
    with torch.no_grad():
        diff = (runs["official", "forward"]() - runs["ours", "forward"]()).abs().max().item()
    for fn in runs.values():  # warm-up
        fn()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for key, fn in runs.items():  # interleaved: both networks see the same machine state
            times[key].append(once(fn))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in (("official", official), ("ours", ours))}
    gflops = {name: flops(runs[name, "forward"]) for name in ("official", "ours")}
    print(f"Hierarchy Flow {args.expansions} at {args.size}x{args.size}, batch 1, {args.threads} thread(s), "
          f"median of {args.reps} interleaved reps; {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"largest output difference (same weights): {diff:.2e}")
    print(f"{'':10}{'params':>12}{'GFLOPs fwd':>12}{'forward ms':>12}{'fwd+bwd ms':>12}")
    for name in ("official", "ours"):
        print(f"{name:10}{params[name]:>12,}{gflops[name]:>12.2f}{med[name, 'forward']:>12.0f}{med[name, 'fwd+bwd']:>12.0f}")
    ratio = {m: med["ours", m] / med["official", m] for m in ("forward", "fwd+bwd")}
    print(f"{'ours/off.':10}{'':>24}{ratio['forward']:>12.2f}{ratio['fwd+bwd']:>12.2f}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "expansions": args.expansions, "threads": args.threads,
                                         "reps": args.reps, "max_abs_diff": diff, "params": params, "gflops": gflops,
                                         "median_ms": {f"{k[0]}/{k[1]}": v for k, v in med.items()},
                                         "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
