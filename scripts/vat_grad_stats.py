"""Is there a direction in VaT's gradient? Per-flow signal and noise on the gate, T_A and T_B.

A translator that does not move may have no gradient (the identity start of issue 15), or a gradient
whose direction changes from batch to batch so that Adam's steps random-walk. This script tells the
two apart. It builds the recipe's method and data as `taskbridge fit` does (optionally loading a
run's checkpoint), then for each of K training batches computes, without updating anything, the
gradient of every loss term of VaT's objective separately (cycle; the MLE fusion, translation and
clean flows; the feature alignment when `method.feature_align` is on), each under the same random draws (mixup shares, augmentation), on each named part of
the translator (`Method.param_subsets()`: gate, transform, backward). Per (term, part), over the K
gradients g_k with mean m:

* `|g|`: the mean gradient norm (how strong the term is);
* `signal`: ||E g||, estimated without the noise bias, sqrt(max(||m||^2 - noise^2 / K, 0));
* `noise`: the spread of one batch's gradient around the mean, sqrt(sum_k ||g_k - m||^2 / (K - 1));
* `batches for SNR 1`: noise^2 / signal^2, how many batches must be averaged before the common
  direction is as large as the noise (inf: none found);
* `sign agreement`: mean over weights of |mean_k sign(g_k)| (1: every batch pushes each weight the
  same way; a direction-free gradient gives about sqrt(2 / (pi K)), printed as the floor; a batch in
  which the term has no certain label gives zeros and counts as no push, so values fall below the
  floor when labels are rare). Adam's per-weight steps follow the sign, so this is what decides
  whether its steps add up or cancel.

Then the cosine between the terms' mean gradients on each part (do they pull together or against?).
docs/results.md §3.1 quotes it:

    python scripts/vat_grad_stats.py recipes/dehaze-det-vat-learn.yaml --batches 16
    python scripts/vat_grad_stats.py recipes/dehaze-det-vat-learn.yaml --checkpoint runs/tables/dehaze-det-vat-learn-s0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.checkpoint import CheckpointError
from taskbridge.config import ConfigError
from taskbridge.engine.probe import TERMS, active_terms, only_term, probe_trainer, training_batches
from taskbridge.engine.seed import capture_rng, restore_rng
from taskbridge.engine.trainer import Trainer


def term_gradients(method: nn.Module, batch: dict[str, Any], parts: Mapping[str, Sequence[nn.Parameter]],
                   terms: Sequence[str], step: int) -> dict[str, dict[str, Tensor]]:
    """{term: {part: flat gradient}} for one batch, every term under the same random draws."""
    rng = capture_rng()
    out: dict[str, dict[str, Tensor]] = {}
    for term in terms:
        restore_rng(rng)
        method.zero_grad(set_to_none=True)
        with only_term(method, term):
            loss = method.training_step(batch, step)["loss/translator"]
        if loss.requires_grad:
            loss.backward()
        out[term] = {name: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                                      for p in params]).cpu() for name, params in parts.items()}
    method.zero_grad(set_to_none=True)
    return out


def summarise(grads: Sequence[Tensor]) -> dict[str, float]:
    """Signal, noise and sign agreement of K gradient vectors of one (term, part)."""
    g = torch.stack(list(grads)).double()
    k = g.shape[0]
    mean = g.mean(0)
    noise2 = float(((g - mean) ** 2).sum() / max(k - 1, 1))
    signal2 = max(float((mean**2).sum()) - noise2 / k, 0.0)
    nonzero = g.abs().sum(0) > 0
    agreement = float(torch.sign(g[:, nonzero]).mean(0).abs().mean()) if bool(nonzero.any()) else 0.0
    return {"norm": float(g.norm(dim=1).mean()), "signal": math.sqrt(signal2), "noise": math.sqrt(noise2),
            "batches_for_snr1": noise2 / signal2 if signal2 > 0 else math.inf, "sign_agreement": agreement}


def cosine(a: Tensor, b: Tensor) -> float:
    denom = float(a.norm() * b.norm())
    return float(a.double() @ b.double()) / denom if denom > 0 else 0.0


def measure(trainer: Trainer, batches: int, only: Sequence[str] | None = None) -> dict[str, Any]:
    method = trainer.method
    if not hasattr(method, "flows"):
        raise ConfigError(f"{type(method).__name__}: this script measures VaT's loss terms; the recipe trains another method")
    parts = method.param_subsets().get("translator", {})
    terms = active_terms(method)
    if only:
        missing = sorted(set(only) - set(terms))
        if missing:
            raise ConfigError(f"--terms {' '.join(missing)}: not part of this recipe's objective ({', '.join(terms)})")
        terms = [t for t in terms if t in only]
    method.train()
    collected: dict[str, dict[str, list[Tensor]]] = {t: {p: [] for p in parts} for t in terms}
    for k, batch in enumerate(training_batches(trainer, batches)):
        for term, by_part in term_gradients(method, batch, parts, terms, trainer.step + k).items():
            for part, g in by_part.items():
                collected[term][part].append(g)
        print(f"batch {k + 1}/{batches}", file=sys.stderr, flush=True)
    stats = {t: {p: summarise(v) for p, v in by_part.items()} for t, by_part in collected.items()}
    total = {p: [sum(collected[t][p][k] for t in terms) for k in range(batches)] for p in parts}
    stats["all"] = {p: summarise(v) for p, v in total.items()}
    means = {t: {p: torch.stack(v).mean(0) for p, v in by_part.items()} for t, by_part in collected.items()}
    cosines = {p: {f"{a}~{b}": cosine(means[a][p], means[b][p]) for i, a in enumerate(terms) for b in terms[i + 1:]}
               for p in parts}
    return {"batches": batches, "batch_size": trainer.batch_size, "step": trainer.step,
            "sign_agreement_floor": math.sqrt(2 / (math.pi * batches)), "stats": stats, "cosines": cosines}


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"{report['batches']} batches of {report['batch_size']} at step {report['step']}; sign agreement "
             f"of a direction-free gradient: {report['sign_agreement_floor']:.3f}", "",
             "| term | part | \\|g\\| | signal | noise | batches for SNR 1 | sign agreement |",
             "|---|---|---|---|---|---|---|"]
    for term, by_part in report["stats"].items():
        for part, s in by_part.items():
            n = s["batches_for_snr1"]
            lines.append(f"| {term} | {part} | {s['norm']:.3g} | {s['signal']:.3g} | {s['noise']:.3g} | "
                         f"{'inf' if math.isinf(n) else f'{n:.3g}'} | {s['sign_agreement']:.3f} |")
    lines += ["", "cosine between the terms' mean gradients:"]
    for part, pairs in report["cosines"].items():
        lines.append(f"  {part}: " + ", ".join(f"{k} {v:+.2f}" for k, v in pairs.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", type=Path, help="a VaT recipe (recipes/*.yaml)")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides, as for taskbridge fit")
    ap.add_argument("--batches", type=int, default=16, help="training batches to measure (K, at least 2)")
    ap.add_argument("--checkpoint", type=Path, help="measure at a run's checkpoint (run or step folder) instead of the start")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--terms", nargs="+", choices=TERMS, help="measure only these terms (default: every active one)")
    args = ap.parse_args(argv)
    if args.batches < 2:
        ap.error("--batches must be at least 2 (the noise needs two gradients)")
    if not args.recipe.is_file():
        ap.error(f"{args.recipe}: no such recipe")
    with tempfile.TemporaryDirectory(prefix="vat-grad-") as tmp:
        try:
            trainer = probe_trainer(args.recipe, args.overrides, tmp, args.checkpoint)
            report = measure(trainer, args.batches, args.terms)
        except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
