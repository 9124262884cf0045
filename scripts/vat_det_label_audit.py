"""What VaT's detection self-training rewards: the fog (and dark-street) counterpart of vat_label_audit.py.

On dark CIFAR-10 the fusion flow's mixup pulls the per-image gate to the dark image; on DAWN fog with AOD-Net,
removing the mixup lets the gate drift to the foggy photo instead (docs/results.md §3.1, §3.2). This script asks
why, on the batches training sees. It builds the recipe's method and data as `taskbridge fit` does (optionally at
a run's checkpoint), draws K training batches (the A photos' random crops at the working size, each paired with a
clean B batch) and, without updating anything:

* audits the degraded side's pseudo-labels (the NMS union of the degraded and the restored view, as the fusion
  flow uses them, after `method.det_labels`): how many are certain, how many of those are right (a human box of
  the same class, IoU >= 0.5; the photos' labels are read here for the diagnosis only, training never reads
  them), which view found them (both, the degraded view only, the restored view only) and whose box the NMS kept
  (the more confident view's: a blend close to that view reproduces its own box best; with det_labels fuse a label
  is the views' consensus, no single view's);
* for every constant blend I = (1 - g) * restored + g * degraded (g: the weight of the degraded photo; T as in
  the recipe or checkpoint), puts what the fusion flow minimises next to what is scored: its loss without mixup
  (the `-nomix` recipes' objective) and the objectness part of it (YOLO's obj term, which holds the background
  anchors: a blend on which the detector fires less everywhere lowers it), its loss with the recipe's mixup (the blend mixed with the clean B partner at
  8 fixed draws of the clean share, targets mixed alike, the method's own label weights), and the detector's
  mAP50 on the blends of these crops against the human boxes (VOC all-point, the recipe's classes).

A gate the objective pulls where detection is not shows as a loss minimum away from the mAP maximum:

    python scripts/vat_det_label_audit.py recipes/dehaze-det-vat-learn-gateonly.yaml --batches 30
    python scripts/vat_det_label_audit.py recipes/dehaze-det-vat-learn-gateonly.yaml method.det_labels=agree

Only the training pool (A) is read; validation and test stay with `taskbridge evaluate`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.checkpoint import CheckpointError
from taskbridge.config import ConfigError
from taskbridge.data.labels import COCO80_NAMES, LabelFormatError
from taskbridge.engine.probe import only_term, probe_trainer, training_batches
from taskbridge.engine.trainer import Trainer
from taskbridge.methods import vat as vat_module
from taskbridge.metrics.detection import ImageBoxes, voc_detection_ap
from taskbridge.uncertainty.certainty import certainty_masks
from taskbridge.uncertainty.mixup import sample_clean_share
from taskbridge.uncertainty.oracle_labels import OracleLabels
from taskbridge.uncertainty.pseudo_labels import found_by_every_view, predict_views

GATES = tuple(i / 10 for i in range(11))
SOURCES = ("both", "degraded", "restored")
KEPT = ("degraded", "restored", "consensus")  # whose box a label is: one view's (it won the NMS) or neither (fuse)


@dataclass
class Labels:
    """The degraded side's certain pseudo-labels: counts (and how many are right) per view that found them."""

    truth: int = 0  # human boxes of the evaluated classes in the crops
    candidates: int = 0  # pseudo-labels before the certainty test
    uncertain: int = 0
    certain: dict[str, list[int]] = field(default_factory=lambda: {s: [0, 0] for s in SOURCES})  # [n, right]
    kept: dict[str, list[int]] = field(default_factory=lambda: {s: [0, 0] for s in KEPT})  # whose box won


@dataclass
class Blend:
    gate: float
    loss_nomix: float  # the fusion flow without mixup (method.mixup=none, as the -nomix recipes)
    obj_nomix: float  # ... its objectness part (the rest: box and class terms of the certain labels)
    loss_mix: float  # ... with the recipe's mixup, mean over the fixed clean shares
    map50: float  # the detector on the blends, against the human boxes


@contextmanager
def patched(module: nn.Module, **attrs: Any) -> Iterator[None]:
    """Instance attributes set for the block (a method replaced on this object only), then restored."""
    saved = {k: (k in vars(module), vars(module).get(k)) for k in attrs}
    for k, v in attrs.items():
        object.__setattr__(module, k, v)
    try:
        yield
    finally:
        for k, (had, old) in saved.items():
            if had:
                object.__setattr__(module, k, old)
            else:
                object.__delattr__(module, k)


def once_per_batch(predict: Callable[..., Any]) -> Callable[..., Any]:
    """`predict_views` remembering its answers for the same view tensors: the fusion flow's pseudo-labels (the
    detector on the B, degraded and restored views) do not depend on the gate, so every blend's loss of one batch
    reuses one prediction (the same detections; before, the detector ran on them again for every loss)."""
    memo: dict[tuple[Any, ...], tuple[Sequence[Tensor], Any]] = {}

    def cached(task: nn.Module, views: Sequence[Tensor], *args: Any, **kwargs: Any) -> Any:
        key = (id(task), tuple(id(v) for v in views), repr(args), repr(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = (list(views), predict(task, views, *args, **kwargs))  # the views held: ids stay theirs
        return memo[key][1]

    return cached


def constant_fuse(gate: float):
    return lambda restored, degraded: ((1 - gate) * restored + gate * degraded,
                                       torch.full_like(restored[:, :1], gate))


def identical(dets: Any, view: Any) -> Tensor:
    """Per box of `dets` (a views' NMS union): the same box and class is in `view`, i.e. the NMS kept its box."""
    if not len(dets) or not len(view):
        return torch.zeros(len(dets), dtype=torch.bool)
    same = (dets.boxes.cpu()[:, None, :] == view.boxes.cpu()[None, :, :]).all(-1)
    return (same & (dets.labels.cpu()[:, None] == view.labels.cpu()[None, :])).any(1)


def evaluated(dets: Any, classes: Sequence[int]) -> ImageBoxes:
    """Detections (COCO indices) as boxes of the evaluation classes (their position in `classes`)."""
    index = {c: i for i, c in enumerate(classes)}
    keep = torch.tensor([int(c) in index for c in dets.labels.cpu()], dtype=torch.bool)
    labels = torch.tensor([index[int(c)] for c in dets.labels.cpu()[keep]], dtype=torch.long)
    return ImageBoxes(dets.boxes.cpu()[keep].float(), labels, dets.scores.cpu()[keep].float())


def audit_labels(method: nn.Module, a: Tensor, r: Tensor, truth: list[Any], tally: Labels) -> None:
    """Adds one batch's pseudo-labels (the fusion flow's degraded side) to `tally`."""
    views = predict_views(method.task, [a, r], method.pseudo_conf, method.pseudo_iou, method.pseudo_max_det,
                          method.classes)
    union = method._union(views)
    scores, _ = method._det_uncertainty(union)
    by_degraded = found_by_every_view(union, [views[0]])
    by_restored = found_by_every_view(union, [views[1]])
    confirmed = found_by_every_view(union, [truth])  # a human box of the same class, IoU >= 0.5
    for i, d in enumerate(union):
        tally.truth += len(truth[i])
        tally.candidates += len(d)
        certain, uncertain = certainty_masks(d.scores.float(), scores[i].float(), method.conf_hi, method.conf_lo,
                                             method._threshold)
        tally.uncertain += int(uncertain.sum())
        right = confirmed[i].cpu()
        deg, res = by_degraded[i].cpu(), by_restored[i].cpu()
        certain = certain.cpu()
        for source, mask in (("both", deg & res), ("degraded", deg & ~res), ("restored", res & ~deg)):
            tally.certain[source][0] += int((certain & mask).sum())
            tally.certain[source][1] += int((certain & mask & right).sum())
        from_degraded = identical(d, views[0][i])
        from_restored = identical(d, views[1][i]) & ~from_degraded
        for source, mask in (("degraded", from_degraded), ("restored", from_restored),
                             ("consensus", ~(from_degraded | from_restored))):
            tally.kept[source][0] += int((certain & mask).sum())
            tally.kept[source][1] += int((certain & mask & right).sum())


def fusion_loss(method: nn.Module, batch: dict[str, Any], gate: float, share: float | None) -> tuple[float, float]:
    """The fusion flow's loss on the constant blend `gate` and its objectness part (YOLO's obj term: mostly the
    background anchors pushed to 0); `share` None: without mixup (method.mixup=none)."""
    attrs: dict[str, Any] = {"fuse": constant_fuse(gate)}
    if share is None:
        attrs["mixup"] = "none"
    else:
        attrs["_shares"] = lambda: (share, share)
    task_loss, parts = method.task.loss, {}

    def recording(*args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        total, components = task_loss(*args, **kwargs)
        parts.update(components)
        return total, components

    with patched(method, **attrs), patched(method.task, loss=recording), only_term(method, "fusion"):
        logs = method.training_step(batch, 0)
    if "mle/fusion" not in logs:
        return math.nan, math.nan
    loss = float(logs["mle/fusion"])
    summed = sum(float(v) for v in parts.values())
    return loss, loss * float(parts["obj"]) / summed if summed > 0 else math.nan


def require_detection_vat(method: nn.Module) -> nn.Module:
    if getattr(method, "kind", None) != "detection" or not hasattr(method, "_union"):
        raise ConfigError(f"{type(method).__name__}: this script audits VaT's detection self-training; "
                          "for classification use scripts/vat_label_audit.py")
    return method


@torch.no_grad()
def measure(trainer: Trainer, batches: int, labels: OracleLabels, gates: Sequence[float] = GATES,
            n_shares: int = 8, seed: int = 0) -> dict[str, Any]:
    method = require_detection_vat(trainer.method)
    method.eval()
    method.fit_nuq()  # also calibrates conf_hi (method.conf_hi_quantile), as the first training step does
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shares = [sample_clean_share(method.mixup_alpha, method.mixup_sampler) for _ in range(n_shares)]
    classes = list(method.classes) if method.classes is not None else list(range(len(COCO80_NAMES)))
    tally = Labels()
    loss_nomix = {g: [] for g in gates}
    obj_nomix = {g: [] for g in gates}
    loss_mix = {g: [] for g in gates}
    preds: dict[float, list[ImageBoxes]] = {g: [] for g in gates}
    targets: list[ImageBoxes] = []
    for k, batch in enumerate(training_batches(trainer, batches)):
        a = batch["A"]
        r = method.restore(a)
        truth = labels.detections(batch, tuple(a.shape[-2:]), a.device)
        truth = [t.select(torch.isin(t.labels, torch.tensor(classes, device=t.labels.device))) for t in truth]
        audit_labels(method, a, r, truth, tally)
        targets += [evaluated(t, classes) for t in truth]
        # the restorer and the pseudo-labels once per batch, not once per loss
        with patched(method, restore=lambda _, r=r: r), patched(vat_module, predict_views=once_per_batch(predict_views)):
            for g in gates:
                loss, obj = fusion_loss(method, batch, g, None)
                loss_nomix[g].append(loss)
                obj_nomix[g].append(obj)
                loss_mix[g].append(sum(fusion_loss(method, batch, g, s)[0] for s in shares) / len(shares))
                fused = constant_fuse(g)(r, a)[0]  # the blend whose loss was just measured
                dets = predict_views(method.task, [fused], 0.001, 0.6, 300, classes)[0]
                preds[g] += [evaluated(d, classes) for d in dets]
        print(f"batch {k + 1}/{batches}", file=sys.stderr, flush=True)
    names = [COCO80_NAMES[c] for c in classes]
    curve = [Blend(g, nanmean(loss_nomix[g]), nanmean(obj_nomix[g]), nanmean(loss_mix[g]),
                   voc_detection_ap(preds[g], targets, names)["map"]) for g in gates]
    return {"batches": batches, "batch_size": trainer.batch_size, "conf_hi": float(method.conf_hi),
            "det_labels": method.det_labels, "mixup": method.mixup, "shares": shares, "labels": asdict(tally),
            "curve": [asdict(c) for c in curve]}


def nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def format_report(report: dict[str, Any]) -> str:
    t = report["labels"]
    n_images = report["batches"] * report["batch_size"]
    lines = [f"{report['batches']} training batches of {report['batch_size']} crops; conf_hi {report['conf_hi']:.3f}, "
             f"det_labels {report['det_labels']}, mixup {report['mixup']} (clean shares "
             + ", ".join(f"{s:.2f}" for s in report["shares"]) + ")", "",
             "| degraded side's pseudo-labels | count (per crop) | right |", "|---|---|---|",
             f"| human boxes of the evaluated classes | {t['truth']} ({t['truth'] / n_images:.2f}) | |",
             f"| candidates (NMS union of the degraded and the restored view) | {t['candidates']} "
             f"({t['candidates'] / n_images:.2f}) | |",
             f"| uncertain (objectness only) | {t['uncertain']} ({t['uncertain'] / n_images:.2f}) | |"]
    total = [sum(v[0] for v in t["certain"].values()), sum(v[1] for v in t["certain"].values())]
    for name, (n, right) in [("certain", total), *((f"... found by {s} view{'s' * (s == 'both')}", t['certain'][s])
                                                   for s in SOURCES)]:
        share = f"{right / n:.1%}" if n else "-"
        lines.append(f"| {name} | {n} ({n / n_images:.2f}) | {right} ({share}) |")
    for source in KEPT:
        n, right = t["kept"][source]
        whose = "no single view's (det_labels fuse)" if source == "consensus" else f"the {source} view's (it won the NMS)"
        lines.append(f"| ... whose box and score are {whose} | {n} ({n / n_images:.2f}) | "
                     f"{right} ({f'{right / n:.1%}' if n else '-'}) |")
    curve = report["curve"]
    marks = {}
    for key, best, label in (("loss_nomix", min, "lowest loss, no mixup"), ("loss_mix", min, "lowest loss with mixup"),
                             ("map50", max, "best mAP50")):
        finite = [c for c in curve if math.isfinite(c[key])]
        if finite:
            top = best(c[key] for c in finite)
            for c in finite:
                if c[key] == top:  # every gate that reaches it: no silent tie-break
                    marks.setdefault(c["gate"], []).append(label)
    lines += ["", "constant blend, gate = weight of the degraded photo (T as built)", "",
              "| gate | fusion-flow loss, no mixup | ... its objectness part | with the recipe's mixup | mAP50 on the crops |",
              "|---|---|---|---|---|"]
    for c in curve:
        mark = "".join(f" ({m})" for m in marks.get(c["gate"], []))
        lines.append(f"| {c['gate']:g}{mark} | {c['loss_nomix']:.4f} | {c['obj_nomix']:.4f} | {c['loss_mix']:.4f} | "
                     f"{c['map50']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", type=Path, help="a VaT detection recipe (recipes/*.yaml)")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides, as for taskbridge fit")
    ap.add_argument("--batches", type=int, default=30, help="training batches to audit (default 30)")
    ap.add_argument("--gates", type=float, nargs="+", default=list(GATES), help="constant blends (default 0, 0.1, ..., 1)")
    ap.add_argument("--shares", type=int, default=8, help="fixed draws of the mixup's clean share (default 8)")
    ap.add_argument("--checkpoint", type=Path, help="audit at a run's checkpoint (run or step folder) instead of the start")
    ap.add_argument("--labels", type=Path, help="YOLO label files of the A photos (default: yolo_labels/ beside "
                    "the recipe's data.train_A folder, as in ../shared/data/dawn_fog)")
    ap.add_argument("--label-ids", default="coco1", choices=("coco1", "coco0"),
                    help="what the label files' class ids mean (dawn_fog: coco1, COCO ids counted from 1)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.batches < 1 or args.shares < 1:
        ap.error("--batches and --shares must be at least 1")
    if any(not 0 <= g <= 1 for g in args.gates):
        ap.error("--gates: every gate is a weight of the degraded photo, between 0 and 1")
    if not args.recipe.is_file():
        ap.error(f"{args.recipe}: no such recipe")
    with tempfile.TemporaryDirectory(prefix="vat-det-audit-") as tmp:
        try:
            trainer = probe_trainer(args.recipe, args.overrides, tmp, args.checkpoint)
            require_detection_vat(trainer.method)
            folder = args.labels or label_folder(trainer)
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no folder of YOLO label files for the A photos (--labels FOLDER)")
            report = measure(trainer, args.batches, OracleLabels(folder, args.label_ids), args.gates, args.shares)
        except (CheckpointError, ConfigError, FileNotFoundError, LabelFormatError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def label_folder(trainer: Trainer) -> Path:
    """yolo_labels/ beside the A photos' folder (the layout of ../shared/data/dawn_fog), under the recipe's
    data.root as the fit resolves data.train_A."""
    from taskbridge.data.root import under_root
    from taskbridge.engine.data import data_root

    source = trainer.config["data"]["train_A"]
    source = source[0] if isinstance(source, list) else source
    return under_root(data_root(trainer.cfg.data), Path(str(source))).parent / "yolo_labels"


if __name__ == "__main__":
    sys.exit(main())
