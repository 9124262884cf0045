"""What VaT's classification self-training rewards: its pseudo-labels' source and accuracy, and confidence
against accuracy for every fixed blend (dark CIFAR-10; the labels are read here for the diagnosis only).

The fusion flow trains the gate so that the frozen classifier repeats, on the fused image, the label of the
*most confident* of the dark and the restored view, where that label is certain (top probability above
conf_hi, NUQ's u' under its threshold). If the dark view wins most labels, the gate is pulled toward the dark
image whether or not those labels are right. For a run of a classification recipe this prints, on the run's
pools (A: the unlabelled training images, darkened as `taskbridge evaluate` darkens, batch b under seed b;
val: the selection pool), how many certain labels each view supplies and how often they are right, and, per
constant blend I = (1 - g) * restored + g * dark (T at the identity), the classifier's mean top probability
and its cross-entropy to the certain pseudo-labels (split by whether the two views agree), then the fusion
flow's loss itself (the blend mixed with a clean pool-B partner at 8 fixed draws of the method's clean share,
targets mixed alike; label weights 1), next to its top-1 accuracy (what is scored). A gate that the objective
pulls where accuracy is not shows here as a loss minimum away from the accuracy maximum:

    python scripts/vat_label_audit.py runs/tables/lowlight-cls-vat-learn-gateonly-step0-s0

The test pool is left alone unless named with --pools (the blends are chosen on val elsewhere).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.checkpoint import CheckpointError, read_meta, resolve_checkpoint
from taskbridge.config import ConfigError, build
from taskbridge.data.root import resolve_data_path
from taskbridge.evaluation.classification import degraded_arrays, label_lookup
from taskbridge.evaluation.datasets import ClassificationArrays, load_cifar_npz, restrict_to_subset
from taskbridge.inference import load_inference_model
from taskbridge.registry import DEGRADATIONS
from taskbridge.uncertainty.mixup import mix, sample_clean_share

GATES = tuple(i / 10 for i in range(11))


def blend(restored: Tensor, dark: Tensor, gate: float) -> Tensor:
    return (1 - gate) * restored + gate * dark


@dataclass
class Blend:
    """One constant blend: what the self-training sees (confidence, its loss) next to what is scored (top-1)."""

    gate: float
    confidence: float  # mean top probability over the pool
    loss: float  # cross-entropy to the certain pseudo-labels (nan without any)
    loss_agree: float  # ... to those on which the dark and the restored view name the same class
    loss_disagree: float  # ... to the others: the most confident view's class
    loss_mixup: float  # the fusion flow's loss: the blend mixed with a clean partner, targets mixed alike
    top1: float


def mean_ce(logits: Tensor, label: Tensor, mask: Tensor) -> float:
    return float(F.cross_entropy(logits[mask], label[mask])) if bool(mask.any()) else float("nan")


def clean_shares(method: torch.nn.Module, n: int = 8, seed: int = 0) -> list[float]:
    """`n` draws of the fusion flow's clean share (the method's own sampler), the same for every blend."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [sample_clean_share(method.mixup_alpha, method.mixup_sampler) for _ in range(n)]


def mixup_loss(task: torch.nn.Module, fused: Tensor, label: Tensor, certain: Tensor, clean: Tensor,
               label_hq: Tensor, certain_hq: Tensor, shares: list[float]) -> float:
    """VaT's fusion-flow loss (label weights 1): the task's soft cross-entropy of mix(fused, clean, s) against
    (1 - s) one-hot(label) on the certain degraded labels + s one-hot(label_hq) on the certain clean ones,
    averaged over the shares."""
    total = 0.0
    for s in shares:
        logp = task.raw(mix(fused, clean, s)).float().log_softmax(-1)
        lq = logp.gather(1, label[:, None])[:, 0] * certain
        hq = logp.gather(1, label_hq[:, None])[:, 0] * certain_hq
        total += float(-((1 - s) * lq + s * hq).mean())
    return total / max(1, len(shares))


@torch.no_grad()
def audit(method: torch.nn.Module, pool: ClassificationArrays, dark: Tensor, clean: Tensor,
          gates: tuple[float, ...] = GATES, shares: list[float] | None = None) -> dict[str, object]:
    """Pseudo-label counts and accuracies (overall, per winning view, where the views agree) and one `Blend` per
    gate. `clean`: a clean partner per image (the pool B of training) for the mixup of the fusion flow."""
    task = method.task
    truth = label_lookup(pool.class_names, list(task.class_names), None)[pool.labels]
    restored = method.restore(dark).clamp(0, 1)
    views = [task.raw(dark).float(), task.raw(restored).float()]
    label, certain, _, _ = method.certain_class_labels(views)
    from_dark = torch.stack([v.softmax(-1).amax(-1) for v in views]).argmax(0) == 0  # the view the label came from
    right = label == truth
    agree = views[0].argmax(-1) == views[1].argmax(-1)

    label_hq, certain_hq, _, _ = method.certain_class_labels([task.raw(clean).float()])
    shares = clean_shares(method) if shares is None else shares

    def acc(mask: Tensor) -> tuple[int, float]:
        n = int(mask.sum())
        return n, float(right[mask].float().mean()) if n else float("nan")

    curve = []
    for g in gates:
        fused = blend(restored, dark, g)
        logits = task.raw(fused).float()
        probs = logits.softmax(-1)
        curve.append(Blend(g, float(probs.amax(-1).mean()), mean_ce(logits, label, certain),
                           mean_ce(logits, label, certain & agree), mean_ce(logits, label, certain & ~agree),
                           mixup_loss(task, fused, label, certain, clean, label_hq, certain_hq, shares),
                           float((probs.argmax(-1) == truth).float().mean())))
    return {"n": len(truth), "certain": acc(certain), "dark": acc(certain & from_dark),
            "restored": acc(certain & ~from_dark), "agree": acc(certain & agree), "curve": curve}


def run_pools(run: Path, names: list[str], data_root: str | None) -> dict[str, dict[str, object]]:
    try:
        source = resolve_checkpoint(str(run), prefer="best")
        config = read_meta(source)["config"]
        if (config.get("data") or {}).get("source") != "cifar_npz":
            sys.exit(f"{run}: not a run of a classification (cifar_npz) recipe")
        method = load_inference_model(source).method.eval()
    except CheckpointError as err:
        sys.exit(str(err))
    except (OSError, KeyError) as err:
        sys.exit(f"{run}: {err!r}")
    if not hasattr(method, "certain_class_labels"):
        sys.exit(f"{run}: not a VaT run (its method has no pseudo-labels to audit)")
    try:
        degradation = build(DEGRADATIONS, config["data"].get("degradation"), "data.degradation")
    except ConfigError as err:
        sys.exit(f"{run}: {err}")
    data = load_cifar_npz(resolve_data_path(config["data"]["path"], data_root))
    out = {}
    try:
        partners = restrict_to_subset(data, f"{run / 'split_pools.json'}:B").images
        pools = {name: restrict_to_subset(data, f"{run / 'split_pools.json'}:{name}") for name in names}
    except (OSError, ValueError) as err:
        sys.exit(f"{run}: {err}")
    for name, pool in pools.items():
        clean = partners[torch.arange(len(pool)) % len(partners)]  # pool B, cycled: the training's clean side
        out[name] = audit(method, pool, degraded_arrays(pool, degradation).images, clean)
    return out


def report(results: dict[str, dict[str, object]]) -> list[str]:
    lines = ["| pool | images | certain labels (right) | from the dark view (right) | from the restored view (right) "
             "| certain, both views agree (right) |", "|---|---|---|---|---|---|"]
    cells = ("certain", "dark", "restored", "agree")
    for name, r in results.items():
        lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{r[c][0]} ({r[c][1]:.1%})" for c in cells) + " |")
    for name, r in results.items():
        lines += ["", f"{name}: constant blend, gate = weight of the dark image (T = identity)", "",
                  "| gate | mean top probability | cross-entropy to the certain pseudo-labels (views agree / "
                  "disagree) | with the clean partner (mixup) | top-1 |", "|---|---|---|---|---|"]
        curve: list[Blend] = r["curve"]
        conf_best = max(curve, key=lambda c: c.confidence).gate
        finite = [c for c in curve if math.isfinite(c.loss)]  # no certain label: no loss to lower
        loss_best = min(finite, key=lambda c: c.loss).gate if finite else None
        mix_best = min(curve, key=lambda c: c.loss_mixup).gate if finite else None
        acc_best = max(c.top1 for c in curve)  # every gate that reaches it is marked: no silent tie-break
        for c in curve:
            mark = (" (most confident)" * (c.gate == conf_best) + " (lowest pseudo-label loss)" * (c.gate == loss_best)
                    + " (lowest with mixup)" * (c.gate == mix_best) + " (most accurate)" * (c.top1 == acc_best))
            lines.append(f"| {c.gate:g}{mark} | {c.confidence:.3f} | {c.loss:.3f} ({c.loss_agree:.3f} / "
                         f"{c.loss_disagree:.3f}) | {c.loss_mixup:.3f} | {c.top1:.1%} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a VaT run of a classification recipe (its best checkpoint, its pools)")
    ap.add_argument("--pools", nargs="+", default=["A", "val"], help="pools of the run's split_pools.json")
    ap.add_argument("--data", default=None, help="data root (default: the recipes' ../shared/data resolution)")
    args = ap.parse_args()
    print("\n".join(report(run_pools(args.run, args.pools, args.data))))


if __name__ == "__main__":
    main()
