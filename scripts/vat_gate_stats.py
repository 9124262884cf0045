"""How far a trained VaT translator moved from its start: gate and per-stage change on real images.

VaT's output is T(I_F) with I_F = (1 - g) * restored + g * degraded (Eq. 5). At step 0 the gate is
about 0.5 everywhere and T is the identity (global residual), so a translator that has learned little
is "half the restorer". This prints, per checkpoint, the gate (weight of the degraded image: mean and
10th-90th percentile), mean absolute differences between the stages, at the working size the
evaluations use, and how far the weights of the gate and of the transformation module moved from
the run's own initialisation (||w - w0|| / ||w0||, w0 rebuilt under the run's seed). For run folders it
also summarises the training log: certain pseudo-labels per image (fusion flow), the certain threshold,
and the validation score and gate at every validation. `--per-photo` asks whether the gate learned a
property of the photos: the Spearman rank correlation, over the photos, of each run's per-photo gate change
(trained minus its own start) with the photo's brightness and with how much the restorer changes it, and
between the runs (independent seeds that learned the same thing rank the photos alike). docs/results.md §3.1
and §3.3 quote it:

    python scripts/vat_gate_stats.py --images ../shared/data/dawn_fog/images --subset recipes/splits/dawn_fog.json:test \\
        --init-seeds 0,1,2 runs/tables/dehaze-det-vat-s0 runs/tables/dehaze-det-vat-s1 runs/tables/dehaze-det-vat-s2
    python scripts/vat_gate_stats.py --images ../shared/data/lowlight_unlabeled_sci runs/tables/lowlight-det-vat-s0

A classification .npz (the CIFAR-10 subset) is read like `taskbridge evaluate` reads it: `--subset` takes a run's
pool by index, `--degrade` darkens the images in batches of 256 under seed 0, 1, ... (evaluate's defaults), so the
statistics are on the same degraded instances as the accuracies, at their own 32 px:

    python scripts/vat_gate_stats.py --images ../shared/data/cifar10_test_subset --degrade lowlight --size 32 \\
        --subset runs/tables/lowlight-cls-vat-learn-s0/split_pools.json:test runs/tables/lowlight-cls-vat-learn-s0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from taskbridge.callbacks import flat_parameters, relative_drift
from taskbridge.checkpoint import read_meta, resolve_checkpoint
from taskbridge.data.io import list_images, read_image
from taskbridge.data.splits import load_split, split_paths
from taskbridge.engine.seed import seed_everything
from taskbridge.evaluation.classification import degraded_arrays
from taskbridge.evaluation.datasets import (
    ClassificationArrays,
    is_classification_npz,
    open_dataset,
    restrict_to_subset,
)
from taskbridge.inference import load_inference_model
from taskbridge.inference.load import build_method
from taskbridge.registry import DEGRADATIONS, RegistryError
from taskbridge.report.collect import read_metrics


def load_images(folder: Path, subset: str | None, size: int, degrade: str | None = None) -> torch.Tensor:
    """The photos of `folder` (or of a classification .npz, optionally degraded) at `size` x `size`."""
    if is_classification_npz(folder):
        return load_npz_images(folder, subset, size, degrade)
    if degrade:
        sys.exit("--degrade is for a classification .npz (photo folders are degraded at their own size by evaluate)")
    if subset:
        file, _, name = subset.rpartition(":")
        split = load_split(file)
        if name not in split:
            sys.exit(f"split '{name}' not in {file}; it has {', '.join(split)}")
        paths = split_paths(split, folder)[name]
    else:
        paths = list_images(folder)
    if not paths:
        sys.exit(f"no images found in {folder}")
    return torch.cat([F.interpolate(read_image(p)[None], size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False) for p in paths]).clamp(0, 1)


def load_npz_images(path: Path, subset: str | None, size: int, degrade: str | None) -> torch.Tensor:
    try:
        data = open_dataset(path)
        data = restrict_to_subset(data, subset) if subset else data
    except (OSError, ValueError) as err:
        sys.exit(f"{path}: {err}")
    assert isinstance(data, ClassificationArrays)
    try:
        degradation = DEGRADATIONS.create(degrade) if degrade else None
    except (RegistryError, TypeError, ValueError) as err:
        sys.exit(f"--degrade {degrade}: {err}")
    images = (degraded_arrays(data, degradation) if degradation is not None else data).images
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1)


def untrained(checkpoint: str, seed: int | None = None) -> torch.nn.Module:
    """The checkpoint's method as built at step 0 (fresh initialisation under `seed`, default the run's)."""
    config = read_meta(resolve_checkpoint(checkpoint, prefer="best"))["config"]
    seed_everything(int(config.get("seed", 0)) if seed is None else seed)
    return build_method(config)


def weight_drift(method: torch.nn.Module, start: torch.nn.Module) -> dict[str, float]:
    """||w - w0|| / ||w0|| of the gate (fusion) and the transformation module of T_A (as drift/* in training)."""
    out = {}
    for key, part in (("gate", "fusion"), ("transform", "transform")):
        now, then = getattr(method.T_A, part), getattr(start.T_A, part)
        out[key] = (float("nan") if now is None or then is None
                    else relative_drift(flat_parameters(now), flat_parameters(then)))
    return out


@torch.no_grad()
def stats(method: torch.nn.Module, checkpoint: str, images: torch.Tensor) -> dict[str, float]:
    method = method.eval()
    if not all(hasattr(method, a) for a in ("restore", "fuse", "T_A")):
        sys.exit(f"{checkpoint}: not a VaT checkpoint (its method has no restore/fuse/T_A)")
    restored = method.restore(images).clamp(0, 1)
    fused, gate = method.fuse(restored, images)
    out = method.T_A.transform(fused).clamp(0, 1)  # = method.translate(images), without restoring again
    d = lambda a, b: float((a - b).abs().mean())  # noqa: E731
    return {"gate": float(gate.mean()), "gate_p10": float(gate.quantile(0.1)), "gate_p90": float(gate.quantile(0.9)),
            "out_fused": d(out, fused.clamp(0, 1)), "out_restored": d(out, restored),
            "out_degraded": d(out, images), "restored_degraded": d(restored, images)}


@torch.no_grad()
def per_photo_gate(method: torch.nn.Module, restored: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Each photo's mean gate (weight of the degraded image), in the order of `images`; `restored` is given
    because a run and its untrained start share the frozen restorer."""
    return method.eval().fuse(restored, images)[1].flatten(1).mean(1)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho over the photos (ties get their mean rank); nan when either side is constant."""
    if float(a.std()) == 0 or float(b.std()) == 0:
        return float("nan")
    return float(spearmanr(a.tolist(), b.tolist()).statistic)


def per_photo_table(runs: list[tuple[str, torch.Tensor]], images: torch.Tensor, restored: torch.Tensor) -> list[str]:
    """Markdown lines: each run's gate change against photo properties, then the runs against each other."""
    brightness = images.flatten(1).mean(1)
    restorer_change = (restored - images).abs().flatten(1).mean(1)
    lines = [f"\nPer photo ({len(images)} photos; Spearman rho of the gate change = trained minus the run's own start):",
             "| run | mean change | rho with brightness | rho with restorer change |", "|---|---|---|---|"]
    lines += [f"| {name} | {float(change.mean()):+.3f} | {rank_correlation(change, brightness):+.2f} | "
              f"{rank_correlation(change, restorer_change):+.2f} |" for name, change in runs]
    pairs = [rank_correlation(a, b) for i, (_, a) in enumerate(runs) for _, b in runs[i + 1:]]
    if pairs:
        lines.append(f"rho between runs' gate changes ({len(pairs)} pairs): mean {sum(pairs) / len(pairs):+.2f}, "
                     f"min {min(pairs):+.2f}, max {max(pairs):+.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="run folders or checkpoint folders (best is used for runs)")
    ap.add_argument("--images", required=True, type=Path, help="image folder, or a classification .npz (or its folder)")
    ap.add_argument("--subset", help="SPLIT_JSON:NAME to take only that split's files (or .npz indices) from --images")
    ap.add_argument("--degrade", help="degradation applied to a classification .npz first (e.g. lowlight)")
    ap.add_argument("--size", type=int, default=160, help="working size (the evaluations' translate size)")
    ap.add_argument("--init-seeds", default="",
                    help="comma-separated seeds: also show the first checkpoint's method freshly initialised (step 0)")
    ap.add_argument("--per-photo", action="store_true",
                    help="also rank-correlate each run's per-photo gate change with the photos and across runs")
    args = ap.parse_args()
    images = load_images(args.images, args.subset, args.size, args.degrade)
    print(f"{len(images)} images from {args.images}{' (' + args.subset + ')' if args.subset else ''} at {args.size} px; "
          "gate = weight of the degraded image; 'a vs b' = mean absolute difference in [0, 1]\n")
    print("| checkpoint | gate mean (p10–p90) | T vs I_F | T vs restored | T vs degraded | restored vs degraded "
          "| gate weights moved | T weights moved |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(f"{args.checkpoints[0]} untrained, seed {seed}", untrained(args.checkpoints[0], seed), None)
            for seed in (int(v) for v in args.init_seeds.split(",") if v.strip())]
    changes, restored = [], images
    for ck in args.checkpoints:
        method, start = load_inference_model(ck).method, untrained(ck)
        rows.append((ck, method, weight_drift(method, start)))
        if args.per_photo:
            with torch.no_grad():
                restored = method.eval().restore(images).clamp(0, 1)
            changes.append((ck, per_photo_gate(method, restored, images) - per_photo_gate(start, restored, images)))
    for name, method, moved in rows:
        s = stats(method, name, images)
        drift = f"{moved['gate']:.4f} | {moved['transform']:.4f}" if moved else "0 | 0"
        print(f"| {name} | {s['gate']:.3f} ({s['gate_p10']:.3f}–{s['gate_p90']:.3f}) | {s['out_fused']:.4f} | "
              f"{s['out_restored']:.4f} | {s['out_degraded']:.4f} | {s['restored_degraded']:.4f} | {drift} |")
    if changes:  # the restorer change per photo: the last run's restorer (frozen, the same in a comparison)
        print("\n".join(per_photo_table(changes, images, restored)))
    print_logs(args.checkpoints)


def log_summary(run: Path) -> str | None:
    """One table row from a run's metrics.jsonl (None when the folder has no log)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = read_metrics(path, [])
    config = read_meta(resolve_checkpoint(str(run), prefer="best"))["config"]
    batch = int((config.get("data") or {}).get("batch_size", 1))
    metric = (config.get("val") or {}).get("metric") or "metric"
    train = [r for r in rows if "labels/fusion_certain" in r]
    certain = sum(r["labels/fusion_certain"] for r in train) / max(1, len(train)) / batch
    conf = [r["labels/conf_hi"] for r in train if "labels/conf_hi" in r]
    vals = ", ".join(f"{r['step']}: {r[f'val/{metric}']:.3f} ({r['val/gate_mean']:.2f})" for r in rows
                     if f"val/{metric}" in r and "val/gate_mean" in r)
    return (f"| {run} | {certain:.2f} | {conf[-1] if conf else 0.5:.3f} | "
            f"{train[-1].get('drift/gate', float('nan')) if train else float('nan'):.3f} | {vals} |")


def print_logs(checkpoints: list[str]) -> None:
    lines = [line for line in (log_summary(Path(ck)) for ck in checkpoints) if line]
    if lines:
        print("\n| run | certain labels / image (fusion) | conf_hi | gate weights moved (last log) "
              "| validation step: score (gate mean) |")
        print("|---|---|---|---|---|")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
