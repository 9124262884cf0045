"""VaT with a constant gate: how well the best fixed blend of restored and degraded image does, chosen on validation.

A trained VaT that only beats its untrained control (gate about 0.5) may still lose to a *fixed* blend
I = (1 - g) * restored + g * degraded at a better g; that constant is the baseline a learned gate has to beat.
For each g this copies a VaT run's checkpoint with the fusion's last 1x1 conv set to weight 0, bias logit(g)
(the gate is then g for every pixel and photo) and T_A's transformation module set to the identity (its last
conv zeroed; global residual), scores the copy on the plan's validation and test splits with the same
`taskbridge evaluate` settings as scripts/vat_experiments.py, and marks the constant validation prefers (every
one of them when several tie):

    python scripts/vat_constant_gate.py dehaze runs/tables/dehaze-det-vat-learn-globalgate-step0-s0
    python scripts/vat_constant_gate.py lowlight-cls runs/tables/lowlight-cls-vat-learn-gateonly-step0-s0 \\
        --gates 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1

The copies (weights only) and evaluations go to <run>/constant-gate/g<g>/; a finished evaluation is reused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

from taskbridge.checkpoint import CheckpointError, read_meta, resolve_checkpoint, save_checkpoint
from taskbridge.inference import load_inference_model

SPLITS = ("val", "test")


def experiments_module():
    """scripts/vat_experiments.py, for its plans (evaluation settings) and its scoring."""
    path = Path(__file__).with_name("vat_experiments.py")
    spec = importlib.util.spec_from_file_location("vat_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def set_constant_gate(method: torch.nn.Module, gate: float) -> None:
    """The gate g everywhere, and T_A the identity: what remains is the fixed blend of Eq. 5."""
    translator = getattr(method, "T_A", None)
    fusion = getattr(translator, "fusion", None)
    if fusion is None:
        raise ValueError("not a VaT with its gated fusion (method.T_A.fusion); a constant gate needs one")
    if not translator.transform.global_residual:
        raise ValueError("T_A has no global residual (translator.global_residual: false), so it cannot be set to "
                         "the identity; use a run of a recipe with global_residual: true")
    g = min(max(gate, 1e-7), 1 - 1e-7)  # sigmoid(+-16) is 0 or 1 to float precision
    fusion.conv_out.weight.zero_()
    fusion.conv_out.bias.fill_(math.log(g / (1 - g)))
    translator.transform.out.weight.zero_()
    translator.transform.out.bias.zero_()


def write_copy(run: str, gate: float, out: Path) -> Path:
    """A weights-only checkpoint of `run` with the constant gate (meta: the run's, marked as derived)."""
    source = resolve_checkpoint(run, prefer="best")
    meta = read_meta(source)
    method = load_inference_model(source).method
    set_constant_gate(method, gate)
    keep = {k: meta[k] for k in ("config", "name", "step", "epoch", "total_steps") if k in meta}
    return save_checkpoint(out, method, meta={**keep, "selected_by": f"constant gate {gate:g} from {source}"})


def on_split(plan: dict, split: str) -> dict:
    """The plan with its test-split evaluation pointed at `split` (`--subset FILE:test` becomes `FILE:split`);
    vat_experiments.evaluate fills in the data root and the run's split file as for the test split."""
    args = list(plan["eval"])
    i = args.index("--subset") + 1
    args[i] = f"{args[i].rpartition(':')[0]}:{split}"
    return {**plan, "eval": args}


def main() -> None:
    exp = experiments_module()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", choices=sorted(p for p, v in exp.PLANS.items() if "eval" in v))
    ap.add_argument("run", type=Path, help="a VaT run folder (its best checkpoint and recipe are copied)")
    ap.add_argument("--gates", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--data", default="../shared/data", help="data root (as in the recipes)")
    args = ap.parse_args()
    if any(not 0 <= g <= 1 for g in args.gates):
        sys.exit(f"--gates must lie in [0, 1], got {args.gates}")
    plan = exp.PLANS[args.plan]
    metric = plan["metric"]
    scores: dict[float, dict[str, float]] = {}
    for gate in args.gates:
        folder = args.run / "constant-gate" / f"g{gate:g}"
        if not (folder / "checkpoint" / "meta.json").is_file():
            try:
                write_copy(str(args.run), gate, folder / "checkpoint")
            except (ValueError, CheckpointError) as err:
                sys.exit(str(err) if isinstance(err, CheckpointError) else f"{args.run}: {err}")
        scores[gate] = {}
        for split in SPLITS:
            result = exp.evaluate(on_split(plan, split), folder / split, args.data, str(args.run / "split_pools.json"),
                                  ["--no-baseline", "--translator", str(folder / "checkpoint")], folder / "evaluate.log")
            scores[gate][split] = float(result["translator"][metric])
    best = max(scores[g]["val"] for g in args.gates)
    chosen = [g for g in args.gates if scores[g]["val"] == best]  # ties are all shown: no silent tie-break
    print(f"\n{args.run}: constant gate (weight of the degraded image), T_A = identity; {metric}\n")
    print("| gate | validation | test |\n|---|---|---|")
    for gate in args.gates:
        mark = f" (best on validation{', tied' if len(chosen) > 1 else ''})" if gate in chosen else ""
        print(f"| {gate:g}{mark} | {scores[gate]['val']:.3f} | {scores[gate]['test']:.3f} |")
    (args.run / "constant-gate" / "scores.json").write_text(json.dumps(
        {"metric": metric, "best_on_val": chosen, "scores": {f"{g:g}": s for g, s in scores.items()}}, indent=1))


if __name__ == "__main__":
    main()
