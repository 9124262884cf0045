"""Inference cost of each translation method (the "cost" columns of the comparison table, VaT Table 1).

Per method recipe (or trained run folder) and working size S, for `method.translate` on one 1x3xSxS image:

* parameters of the inference path, split into the trainable translator (the modules `translate`
  actually calls among the method's children: VaT's T_A, CycleGAN's G_A, CUT/FastCUT/ODCR's G) and the
  frozen modules it calls (VaT's restorer, e.g. AOD-Net). The split is found by hooking the method's
  submodules during one `translate` call, not by attribute names; unused parts (T_B, G_B, D, heads, the
  task model) are not counted.
* FLOPs per image, counted with `torch.utils.flop_counter.FlopCounterMode`: only matmul/conv-like ops
  (conv, linear, bmm, attention), each as 2 x MACs; elementwise ops, norms, activations, pooling and
  resampling are not counted. Reported for the whole path and for the translator alone (for VaT the
  path is restorer + T_A).
* latency and images/s of `translate` under `torch.no_grad` at batch 1 (`harness.time_it`: mean of
  `--iters` after `--warmup`), on a seeded random image (content does not change the cost of these nets).

Numbers do not depend on the weights; `--runs` exists so a table can cite the trained model.

    TASKBRIDGE_WEIGHTS=../shared/data .venv/bin/python benchmarks/bench_inference.py \\
        --recipes recipes/compare/cut-dehaze-det.yaml recipes/dehaze-det-vat.yaml \\
        [--runs runs/tables/cut-dehaze-det-s0] [--sizes 160] [--threads 1] [--iters 5] [--warmup 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from harness import time_it


@dataclass
class PathCall:
    """One outermost submodule call made by `translate` (its top-level child and inputs, for re-counting)."""

    child: str
    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def count_params(modules: list[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return int(fc.get_total_flops())


def trace_path(method: nn.Module, x: Tensor) -> list[PathCall]:
    """Outermost submodule calls of one `translate(x)`: only calls with no other hooked module on the stack,
    so a child called as a whole is recorded once and a child used through its parts (e.g. `T.transform`)
    is recorded by those parts."""
    calls: list[PathCall] = []
    depth = [0]
    handles = []

    def pre(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if depth[0] == 0:
                calls.append(PathCall(name.split(".")[0], mod, args, dict(kwargs)))
            depth[0] += 1
        return hook

    def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        depth[0] -= 1

    for name, mod in method.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(mod.register_forward_hook(post))
    try:
        with torch.no_grad():
            method.translate(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def split_path(method: nn.Module, children: list[str]) -> tuple[list[str], list[str]]:
    """(translator, frozen) children of the inference path. Translator: listed in `inference_modules` or
    trainable; frozen: everything else `translate` calls (a restorer)."""
    declared = set(getattr(method, "inference_modules", ()) or ())
    mods = dict(method.named_children())
    translator, frozen = [], []
    for c in children:
        trainable = any(p.requires_grad for p in mods[c].parameters())
        (translator if c in declared or trainable else frozen).append(c)
    return translator, frozen


def measure(method: nn.Module, name: str, size: int, iters: int, warmup: int, source: str = "") -> dict[str, Any]:
    """One row: params, FLOPs and CPU speed of `method.translate` on a 1x3xSxS image."""
    method.eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    calls = trace_path(method, x)
    children = list(dict.fromkeys(c.child for c in calls))
    translator, frozen = split_path(method, children)
    mods = dict(method.named_children())

    def flops_of(group: list[str]) -> int:
        return sum(count_flops(lambda c=c: c.module(*c.args, **c.kwargs)) for c in calls if c.child in group)

    total = count_flops(lambda: method.translate(x))

    def infer() -> None:
        with torch.no_grad():
            method.translate(x)

    dt = time_it(infer, iters, warmup)
    return {
        "method": name,
        "type": type(method).__name__,
        "source": source,
        "size": size,
        "translator_modules": translator,
        "frozen_modules": frozen,
        "translator_params": count_params([mods[c] for c in translator]),
        "restorer_params": count_params([mods[c] for c in frozen]) if frozen else None,
        "flops": total,
        "translator_flops": flops_of(translator),
        "restorer_flops": flops_of(frozen) if frozen else None,
        "ms_per_img": dt * 1e3,
        "img_per_s": 1 / dt,
    }


def method_from_recipe(path: str, overrides: list[str]) -> tuple[nn.Module, str]:
    from taskbridge.config import load_recipe
    from taskbridge.inference.load import build_method

    cfg = load_recipe(path, overrides)
    torch.manual_seed(0)
    return build_method(cfg), str(cfg.get("name") or Path(path).stem)


def method_from_run(path: str) -> tuple[nn.Module, str, str]:
    from taskbridge.inference import load_inference_model

    model = load_inference_model(path)
    return model.method, Path(path).name, f"{model.meta.get('path')} (step {model.meta.get('step')})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "platform": platform.platform(), "cores": os.cpu_count()}


def _m(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f}"


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], iters: int, warmup: int) -> str:
    """One table per size: method | translator params (M) | restorer params (M) | GFLOPs | ms | img/s."""
    out = [f"CPU inference, batch 1, torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}; "
           f"mean of {iters} after {warmup} warm-up. GFLOPs = 2 x MACs of conv/matmul ops (FlopCounterMode)."]
    for size in dict.fromkeys(r["size"] for r in rows):
        out += ["", f"| method | translator params (M) | restorer params (M) | GFLOPs/img @{size} "
                    f"| translator GFLOPs @{size} | ms/img | img/s |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["size"] == size):
            out.append(f"| {r['method']} ({'+'.join(r['frozen_modules'] + r['translator_modules'])}) "
                       f"| {_m(r['translator_params'])} | {_m(r['restorer_params'])} | {r['flops'] / 1e9:.3f} "
                       f"| {r['translator_flops'] / 1e9:.3f} | {r['ms_per_img']:.1f} | {r['img_per_s']:.2f} |")
    return "\n".join(out)


def run(recipes: list[str], runs: list[str], sizes: list[int], iters: int, warmup: int,
        overrides: list[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for path in recipes:
        method, name = method_from_recipe(path, list(overrides))
        rows += [measure(method, name, s, iters, warmup, source=path) for s in sizes]
    for path in runs:
        method, name, source = method_from_run(path)
        rows += [measure(method, name, s, iters, warmup, source=source) for s in sizes]
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="*", default=[], help="method recipes (YAML, `base:` lists allowed)")
    ap.add_argument("--runs", nargs="*", default=[], help="trained run folders / checkpoints (load_inference_model)")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="recipe overrides applied to every --recipes entry, e.g. method.generator.ngf=8")
    ap.add_argument("--sizes", "--size", type=int, nargs="+", default=[160], help="square working sizes")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", type=Path, default=None, help="also write settings, environment and rows here")
    a = ap.parse_args(argv)
    if not a.recipes and not a.runs:
        ap.error("give --recipes and/or --runs")
    os.environ.setdefault("TASKBRIDGE_WEIGHTS", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    torch.set_num_threads(a.threads)
    rows = run(a.recipes, a.runs, a.sizes, a.iters, a.warmup, a.overrides)
    env = environment()
    print(markdown(rows, env, a.iters, a.warmup))
    if a.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
        a.json.write_text(json.dumps({"settings": settings, "env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
