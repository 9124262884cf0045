"""VaT objective (Wu & Jin, ECCV 2024): cycle loss + maximum marginal likelihood through a frozen task model.

Per step (paper Alg. 1, official code's three flows, REFERENCE §1.2-1.6):

1. I_R = R(I_LQ) (frozen restorer, clamped to [0, 1]); I_F, gate = G_A(I_R, I_LQ); out = T_A(I_F).
2. L_cyc (Eq. 6) = |I_F - T_B(out)|_1 + |I_HQ - T_A(T_B(I_HQ))|_1 (forward target is the *fused* image).
3. Pseudo-labels (frozen task, no grad): Y_HQ = D(I_HQ); Y_LQ = NMS(D(I_LQ) u D(I_R));
   Y_L = NMS(D(I_F) u D(I_R) u D(I_LQ) u D(out)) (``pseudo_views: code``; ``paper`` uses Y_LQ).
   NUQ gives u' per label; certainty filtering keeps certain (hard) and uncertain (soft) labels.
4. L_mle (Eq. 8) = sum of the flows, each the frozen task's own differentiable loss:
   fusion      D((1-a) I_F + a I_HQ)           labels Y_LQ u Y_HQ -> gradient to the GFM
   translation D(T_A((1-a2) aug(I_F) + a2 I_HQ)) labels Y_L u Y_HQ -> UTM (I_F detached)
   hq          D(T_A(I_HQ))                      labels Y_HQ, weight 1 -> UTM
   a = clean share of the mixup (Eq. 7; see `uncertainty.mixup`), label weights per `mixup`/`weighting`.
5. loss = cycle_weight * L_cyc + mle_weight * L_mle (+ feature_align * L_feat, off by default). No discriminator.

A flow with no surviving labels is skipped (its label counts are logged; L_cyc stays). Every
loss is asserted finite. Classification tasks: pseudo-label = argmax of the most confident view,
NUQ feature = logits, targets = soft label rows (share * weight * one-hot) through the task loss.

Options beyond the paper, each off by default (docs/results.md §3.1 measures them): `classes`
(pseudo-labels of the evaluated classes only), `cls_labels: agree` (classification: a label is certain only
where every view names the same class; §3.2), `det_labels: agree` (its detection form: a box is certain only
where every view finds it; `fuse`: every box the views' score-weighted consensus), `conf_hi_quantile` (the certain threshold calibrated to
the detector), `bg_weight` (scales the background-objectness weight), `augment` (the reference code's
augmentation of the translation flow), `teacher_ema` (the translation flow's pseudo-labels predicted
through an EMA of T_A, a mean teacher; the copy is checkpointed), `feature_align` (a loss on what the task
model sees: its per-channel feature statistics on T_A's output pulled toward those on the clean nuq_fit
images, `losses.feature_statistics`; `feature_momentum` averages the compared statistics over batches);
with the translator's `out_init_std`, the optimizer's
`param_groups` (e.g. the gate's own lr) and the data's `crop: random_resized`.

[decision] `weighting` defaults to ``official`` (0.5 + 500 u, grows with uncertainty, as coded and
as Eq. 7 reads) for reproduction; ``inverse`` mirrors it in the same range; see `uncertainty.certainty`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, PositiveFloat, PositiveInt, Unit
from taskbridge.callbacks import EMA, Callback, ParameterDrift
from taskbridge.checkpoint import untrained_prefixes
from taskbridge.config import build
from taskbridge.losses.feature_statistics import (
    RunningStatistics,
    Statistics,
    channel_statistics,
    clean_feature_statistics,
    statistics_loss,
)
from taskbridge.methods.base import Method, check_no_reference
from taskbridge.methods.common import build_network
from taskbridge.registry import METHODS, RESTORERS, TASKS, TRANSLATORS
from taskbridge.run_config import describe_errors
from taskbridge.tasks.base import ClassificationTargets, Detections, DetectionTargets, FrozenTask
from taskbridge.translators.vat import VaTTranslator
from taskbridge.uncertainty.augment import AugmentPolicy, augment_batch_with_origin, gather_rows
from taskbridge.uncertainty.certainty import WEIGHTINGS, background_weight, detections_to_targets
from taskbridge.uncertainty.mixup import MIXUPS, SAMPLERS, label_weights, mix, sample_clean_share
from taskbridge.uncertainty.nuq import NUQ, fit_nuq_from_classifier, fit_nuq_from_detector
from taskbridge.uncertainty.oracle_labels import OracleLabels
from taskbridge.uncertainty.oracle_labels import certain as oracle_certain
from taskbridge.uncertainty.oracle_labels import class_rows as oracle_class_rows
from taskbridge.uncertainty.oracle_labels import classes_of as oracle_classes
from taskbridge.uncertainty.pseudo_labels import (
    cap_scores,
    classification_pseudo_labels,
    found_by_every_view,
    fuse_views,
    predict_views,
    union_nms,
)


class NuqFit(BaseModel):
    """`method.nuq_fit`: fit the NUQ on unmodified clean images of a declared split (REFERENCE 1.4 [decision])."""

    model_config = ConfigDict(extra="forbid")

    folder: str  # image folder, or an .npz (then `pool` + `fractions` name its clean pool, as data.split cuts it)
    split: str  # the declared split's name, stored with the fitted NUQ
    max_images: PositiveInt = 500
    size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None  # default 256 (detection) / 32 (classification)
    batch_size: PositiveInt = 8
    refit: bool = True  # refit bandwidth and threshold for this detector
    holdout: Unit = 0.2
    quantile: Unit = 0.95
    save: str | None = None
    pool: str | None = None
    fractions: dict[str, NonNegativeFloat] | None = None
    seed: int = 0


TRANSLATOR = {"type": "vat", "width": 16, "heads": 2, "expansion": 2.66, "gate_channels": 3, "global_residual": False}


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _fit_images(folder: str, max_images: int, size: int | list[int], batch_size: int):
    """Batches of unmodified images of a declared split, resized to `size` (aspect not kept, as in training)."""
    from taskbridge.data.io import list_images, read_image

    paths = list_images(folder)[:max_images]
    if not paths:
        raise FileNotFoundError(f"method.nuq_fit.folder: no images in {folder}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    for i in range(0, len(paths), batch_size):
        imgs = [F.interpolate(read_image(p)[None], size=hw, mode="bilinear", align_corners=False)
                for p in paths[i:i + batch_size]]
        yield torch.cat(imgs).clamp(0, 1)


def _fit_npz_pool(path: str, pool: str, fractions: dict[str, float], seed: int, max_images: int, batch_size: int):
    """Batches of the clean pool of a labelled .npz, cut exactly as the engine's `cifar_npz` data source
    cuts it (same names, fractions and seed), so the NUQ never sees the degraded or validation pools."""
    import numpy as np

    from taskbridge.data.splits import split_indices

    images = np.load(path)["images"]
    parts = split_indices(len(images), fractions, seed)
    if pool not in parts:
        raise ValueError(f"method.nuq_fit.pool '{pool}' is not one of {', '.join(parts)}")
    idx = [int(n) for n in parts[pool]][:max_images]
    x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0
    yield from x.split(batch_size)


def cycle_loss(fused: Tensor, out: Tensor, clean: Tensor, t_a: Any, t_b: Any) -> tuple[Tensor, Tensor]:
    """Eq. 6: forward |I_F - T_B(T_A(I_F))|_1 (out = T_A(I_F)) and backward |I_HQ - T_A(T_B(I_HQ))|_1."""
    return (t_b(out) - fused).abs().mean(), (t_a(t_b(clean)) - clean).abs().mean()


CLS_LABELS = ("confident", "agree")  # method.cls_labels
DET_LABELS = ("union", "agree", "fuse")  # method.det_labels
AGREE_IOU = 0.5  # det_labels agree/fuse: a view finds a box when it has one of its class overlapping it this much


@METHODS.register("vat")
class VaT(Method):
    """VaT: gated-fusion + U-transformer translator between a frozen restorer and a frozen task model."""

    inference_modules = ("T_A",)

    def __init__(
        self,
        task: dict[str, Any] | nn.Module,
        restorer: dict[str, Any] | nn.Module | None = None,
        translator: dict[str, Any] | None = None,
        translator_B: dict[str, Any] | None = None,
        use_cycle: bool = True,
        use_mle: bool = True,
        use_gfm: bool = True,
        fusion_flow: bool = True,
        translation_flow: bool = True,
        hq_flow: bool = True,
        mixup: str = "uncertainty",
        mixup_alpha: PositiveFloat = 0.5,
        mixup_sampler: str = "code",
        weighting: str = "official",
        umix_c: NonNegativeFloat = 0.5,
        umix_eta: NonNegativeFloat = 500.0,
        nuq: str | Path | NUQ | None = None,
        nuq_fit: NuqFit | dict[str, Any] | None = None,
        u_threshold: PositiveFloat | None = None,
        conf_hi: Unit = 0.5,
        conf_hi_quantile: Unit | None = None,
        conf_lo: Unit = 0.2,
        pseudo_conf: Unit = 0.1,
        pseudo_iou: Unit = 0.6,
        pseudo_max_det: PositiveInt = 1000,
        pseudo_views: str = "code",
        cls_labels: str = "confident",
        det_labels: str = "union",
        classes: list[int] | None = None,
        bg_weight: NonNegativeFloat = 1.0,
        augment: bool | AugmentPolicy | dict[str, Any] = False,
        teacher_ema: Unit | None = None,
        feature_align: NonNegativeFloat = 0.0,
        feature_momentum: Unit = 0.9,
        oracle_labels: str | None = None,
        oracle_ids: str = "coco1",
        oracle_min_size: NonNegativeFloat = 0.0,
        cycle_weight: NonNegativeFloat = 1.0,
        mle_weight: NonNegativeFloat = 1.0,
    ) -> None:
        super().__init__()
        for name, value, allowed in (("mixup", mixup, MIXUPS), ("weighting", weighting, WEIGHTINGS),
                                     ("mixup_sampler", mixup_sampler, SAMPLERS),
                                     ("pseudo_views", pseudo_views, ("code", "paper")),
                                     ("cls_labels", cls_labels, CLS_LABELS), ("det_labels", det_labels, DET_LABELS)):
            if value not in allowed:
                raise ValueError(f"method.{name}: '{value}' is not one of {', '.join(allowed)}")
        self.task = _frozen(task if isinstance(task, nn.Module) else build(TASKS, task, "method.task"))
        if restorer is None:
            restorer = {"type": "identity"}
        self.restorer = _frozen(restorer if isinstance(restorer, nn.Module)
                                else build(RESTORERS, restorer, "method.restorer"))
        self.kind = getattr(self.task, "kind", "")
        if self.kind not in ("detection", "classification"):
            raise ValueError(f"method.task: VaT needs a detection or classification task, got kind '{self.kind}'")
        # T_A (gated, 6 channels) and T_B (ungated, the backward cycle) from the `translator:` section
        # (`translator_B:` for a different T_B). global_residual=False is the reference (random output at
        # step 0); true starts both at the identity (zero-initialised last conv), which short budgets need.
        self.T_A = build_network(TRANSLATORS, translator, TRANSLATOR, "method.translator",
                                 in_channels=6 if use_gfm else 3, gated=use_gfm)
        self.T_B = build_network(TRANSLATORS, translator_B if translator_B is not None else translator, TRANSLATOR,
                                 "method.translator_B", in_channels=3, gated=False)
        for name, net in (("translator", self.T_A), ("translator_B", self.T_B)):
            if not isinstance(net, VaTTranslator):
                raise ValueError(f"method.{name}: VaT needs its gated-fusion translator (type vat), got "
                                 f"{type(net).__name__}")
        self.use_cycle, self.use_mle, self.use_gfm = use_cycle, use_mle, use_gfm
        # teacher_ema (beyond the paper; default none): the pseudo-labels' fused and translated views come
        # from an exponential moving average of T_A (mean teacher) instead of the network being trained
        if teacher_ema is not None and not 0.0 <= teacher_ema < 1.0:
            raise ValueError(f"method.teacher_ema: the EMA decay must be in [0, 1), got {teacher_ema}")
        if teacher_ema is not None and not (translation_flow and pseudo_views == "code"):
            raise ValueError("method.teacher_ema labels the translation flow's fused and translated views: it needs "
                             "translation_flow: true and pseudo_views: code")
        self.teacher_ema = teacher_ema
        self.T_A_teacher = EMA.copy_of(self.T_A) if teacher_ema is not None else None
        self.flows = {"fusion": fusion_flow and use_gfm, "translation": translation_flow, "hq": hq_flow}
        self.mixup, self.mixup_alpha, self.mixup_sampler = mixup, mixup_alpha, mixup_sampler
        self.weighting, self.umix_c, self.umix_eta = weighting, umix_c, umix_eta
        self.conf_hi, self.conf_lo = conf_hi, conf_lo
        # conf_hi_quantile: the certain threshold is calibrated to the detector (that quantile of its
        # confidences on the clean NUQ-fit images) at the first training step, replacing conf_hi
        self.conf_hi_quantile = conf_hi_quantile
        self._conf_calibrated = conf_hi_quantile is None
        self.classes = None if classes is None else [int(c) for c in classes]
        self.bg_weight = bg_weight
        self.pseudo_conf, self.pseudo_iou, self.pseudo_max_det = pseudo_conf, pseudo_iou, pseudo_max_det
        self.pseudo_views = pseudo_views
        # cls_labels (classification; beyond the paper): "confident" = the most confident view's class (the paper);
        # "agree" also asks every view of that side to name the same class (scripts/vat_label_audit.py: on dark
        # CIFAR-10 the disputed labels are 42 % wrong and are fitted best by a dark-leaning blend; docs/results.md §3.2)
        if cls_labels != "confident" and self.kind != "classification":
            raise ValueError(f"method.cls_labels: '{cls_labels}' is for classification tasks; use det_labels")
        self.cls_labels = cls_labels
        # det_labels (detection; beyond the paper): "union" = the NMS union of the views (the paper); "agree" keeps
        # a box certain only where every view of that side finds it (same class, IoU >= AGREE_IOU), the others
        # become uncertain (objectness-only) labels: the detection form of cls_labels "agree"; "fuse" gives each union
        # box the views' consensus (score-weighted mean box, score summed over the views that find it / n views;
        # uncertainty.pseudo_labels.fuse_views), a label that is no single view's own (scripts/vat_det_label_audit.py:
        # with "union" the gate is pulled toward whichever view wins the NMS; docs/results.md §3.1)
        if det_labels != "union" and self.kind != "detection":
            raise ValueError(f"method.det_labels: '{det_labels}' is for detection tasks; use cls_labels")
        self.det_labels = det_labels
        # augment: false (the paper), true (the reference code's set: flip, gamma x gain, scale, mosaic, cutout)
        # or {flip: p, mosaic: p, ...} (uncertainty.augment.AugmentPolicy)
        self.augment = self._check_augment(augment)
        self.cycle_weight, self.mle_weight = cycle_weight, mle_weight
        # feature_align (beyond the paper; default 0 = off): weight of a loss pulling the frozen task model's
        # per-channel feature statistics on T_A's output toward those on the clean nuq_fit images
        # (feature_momentum: the statistics compared are a running average over batches, see running_statistics)
        if not 0.0 <= feature_momentum < 1.0:
            raise ValueError(f"method.feature_momentum must be in [0, 1), got {feature_momentum}")
        self.feature_align = feature_align
        self._clean_features: Statistics | None = None
        # the running average is checkpointed (extra state), so a resumed run continues it
        self.running_features = RunningStatistics(feature_momentum) if feature_align > 0 else None
        # oracle_labels (a diagnostic, not VaT: default none): the degraded photos' human labels replace the
        # pseudo-labels of the fusion and translation flows, to measure what a perfect signal would teach
        # (detection: a folder of YOLO labels, oracle_min_size: only boxes whose shorter side in the training view
        # is at least this many pixels; classification: "data", the classes the data set keeps for pool A)
        self.oracle = self._check_oracle(oracle_labels, oracle_ids, oracle_min_size, use_mle)
        self.oracle_classes = oracle_labels == "data"  # checked above: a classification task
        self.u_threshold = u_threshold
        needs_clean = conf_hi_quantile is not None or feature_align > 0
        self._nuq_fit = self._check_nuq_fit(nuq_fit) if nuq is None or needs_clean else None
        if conf_hi_quantile is not None and (self._nuq_fit is None or self.kind != "detection"):
            raise ValueError("method.conf_hi_quantile calibrates on the clean images of method.nuq_fit (detection "
                             "tasks): set nuq_fit, or give conf_hi as a number")
        if feature_align > 0 and self._nuq_fit is None:
            raise ValueError("method.feature_align takes its clean feature statistics from the images of "
                             "method.nuq_fit: set nuq_fit, or feature_align: 0")
        if feature_align > 0 and type(self.task).feature_maps is FrozenTask.feature_maps:
            raise ValueError(f"method.feature_align: the task {type(self.task).__name__} exposes no feature maps")
        self.nuq: NUQ | None = NUQ.load(nuq) if isinstance(nuq, (str, Path)) else nuq
        self._apply_threshold()
        if self.nuq is None and self._nuq_fit is None and use_mle:
            warnings.warn("VaT: no NUQ given (method.nuq / method.nuq_fit): uncertainty filtering and "
                          "weighting are off (u' = offset for every label)", stacklevel=2)
        if not (use_cycle or use_mle or feature_align > 0):
            raise ValueError("method: use_cycle and use_mle are both false and feature_align is 0: nothing to train")

    @staticmethod
    def _check_augment(augment: bool | AugmentPolicy | dict[str, Any]) -> AugmentPolicy | None:
        if isinstance(augment, bool):
            return AugmentPolicy() if augment else None
        if isinstance(augment, AugmentPolicy):
            return augment
        try:
            return AugmentPolicy.model_validate(dict(augment))
        except ValidationError as err:
            raise ValueError(f"method.augment: {describe_errors(err)}") from None

    # ------------------------------------------------------------------ NUQ
    def _apply_threshold(self) -> None:
        if self.nuq is not None and self.u_threshold is not None:
            self.nuq.config.threshold = float(self.u_threshold)

    @staticmethod
    def _check_nuq_fit(nuq_fit: NuqFit | dict[str, Any] | None) -> NuqFit | None:
        if nuq_fit is None:
            return None
        if not isinstance(nuq_fit, NuqFit):
            try:
                nuq_fit = NuqFit.model_validate(dict(nuq_fit))
            except ValidationError as err:
                raise ValueError(f"method.nuq_fit: {describe_errors(err)}") from None
        from taskbridge.data.root import resolve_data_path

        folder = resolve_data_path(nuq_fit.folder)
        is_npz = folder.suffix == ".npz" and folder.is_file()
        if not (folder.is_dir() or is_npz):
            raise FileNotFoundError(f"method.nuq_fit.folder: {folder} is not a folder or an .npz file")
        if is_npz and (nuq_fit.pool is None or nuq_fit.fractions is None):
            raise ValueError("method.nuq_fit with an .npz needs pool and fractions (the clean pool of data.split)")
        return nuq_fit.model_copy(update={"folder": str(folder)})

    def _check_oracle(self, folder: str | None, ids: str, min_size: float, use_mle: bool) -> OracleLabels | None:
        """The detection oracle's labels; None without one, or for a classifier's 'data' (read from each batch)."""
        if folder is None:
            return None
        if folder == "data":
            if self.kind != "classification":
                raise ValueError("method.oracle_labels: 'data' (the classes of pool A) is for a classification task; "
                                 "a detector takes a folder of YOLO labels")
            if not use_mle:
                raise ValueError("method.oracle_labels replaces the pseudo-labels: it needs use_mle: true")
            return None
        if self.kind != "detection" or not use_mle:
            raise ValueError("method.oracle_labels replaces the pseudo-labels: a folder of YOLO labels needs a "
                             "detection task and use_mle: true (a classifier takes 'data', the classes of pool A)")
        from taskbridge.data.root import resolve_data_path

        return OracleLabels(resolve_data_path(folder), ids, min_size)

    def fit_nuq(self) -> NUQ | None:
        """Fit the NUQ from `nuq_fit` (lazily, at the first training step, on the task's device), so
        building the method for evaluation never pays for it. Save it with `nuq_fit.save` and pass
        `nuq: <path>` to reuse it."""
        self._calibrate_conf_hi()
        if self.nuq is not None or self._nuq_fit is None:
            return self.nuq
        opts = self._nuq_fit
        batches = self._clean_batches()
        common = {"split": opts.split, "refit": opts.refit, "holdout": opts.holdout, "quantile": opts.quantile}
        fitted = (fit_nuq_from_detector(self.task, batches, conf_thres=self.pseudo_conf, **common)
                  if self.kind == "detection" else fit_nuq_from_classifier(self.task, batches, **common))
        fitted.config.info["folder"] = opts.folder
        if opts.save:
            fitted.save(Path(opts.save))
        self.nuq = fitted
        self._apply_threshold()
        return fitted

    def _clean_batches(self) -> Iterator[Tensor]:
        """Batches of the clean images of `nuq_fit` (folder or .npz pool), on the host."""
        opts = self._nuq_fit
        assert opts is not None
        if opts.folder.endswith(".npz"):
            return _fit_npz_pool(opts.folder, str(opts.pool), dict(opts.fractions or {}), opts.seed,
                                 opts.max_images, opts.batch_size)
        return _fit_images(opts.folder, opts.max_images, self._fit_size, opts.batch_size)

    def clean_feature_targets(self) -> Statistics:
        """The frozen task's per-channel feature statistics on the clean `nuq_fit` images (once, lazily, on
        the task's device; recomputed identically on resume)."""
        if self._clean_features is None:
            dev = next(self.task.parameters()).device
            self._clean_features = clean_feature_statistics(
                (b.to(dev) for b in self._clean_batches()), self.task.feature_maps)
        return self._clean_features

    @property
    def _fit_size(self) -> int | tuple[int, int]:
        """Size of the NUQ-fit images: `nuq_fit.size`, default 256 (detection) / 32 (classification)."""
        assert self._nuq_fit is not None
        return self._nuq_fit.size or (256 if self.kind == "detection" else 32)

    @torch.no_grad()
    def _calibrate_conf_hi(self) -> None:
        """conf_hi = `conf_hi_quantile` of the detector's pseudo-label confidences (above pseudo_conf, of the
        evaluated `classes`) on the clean NUQ-fit images at their fit size: a threshold relative to this
        detector's own score scale instead of a fixed 0.5 (which keeps ~0.45 labels per 160 px photo)."""
        if self._conf_calibrated:
            return
        opts = self._nuq_fit
        assert opts is not None and self.conf_hi_quantile is not None
        dev = next(self.task.parameters()).device
        scores = [d.scores for batch in self._clean_batches()
                  for d in predict_views(self.task, [batch.to(dev)], self.pseudo_conf, self.pseudo_iou,
                                         self.pseudo_max_det, self.classes)[0]]
        found = torch.cat(scores) if scores else torch.zeros(0)
        if found.numel() == 0:
            raise ValueError(f"method.conf_hi_quantile: the detector finds nothing above pseudo_conf "
                             f"{self.pseudo_conf} on {opts.folder}")
        self.conf_hi = float(torch.quantile(found.float().cpu(), float(self.conf_hi_quantile)))
        self._conf_calibrated = True

    # ------------------------------------------------------------------ Method contract
    @property
    def frozen_modules(self) -> tuple[str, ...]:  # type: ignore[override]
        """The frozen task model and restorer. The translators are always saved: the EMA teacher changes without
        gradients, and a part held at lr 0 (`param_groups`, frozen by the optimizer) is still the run's network."""
        own = ("T_A.", "T_B.", "T_A_teacher.")
        return tuple(p.removesuffix(".") for p in untrained_prefixes(self) if not p.startswith(own))

    def callbacks(self) -> list[Callback]:
        """How far the gate and the transformation module moved from their start (logged as drift/*),
        and the EMA teacher's update when there is one."""
        parts = {"transform": self.T_A.transform}
        if self.T_A.fusion is not None:
            parts = {"gate": self.T_A.fusion, **parts}
        teacher = [EMA(self.T_A, self.T_A_teacher, self.teacher_ema, name="teacher_ema")] \
            if self.T_A_teacher is not None and self.teacher_ema is not None else []
        return [ParameterDrift(parts), *teacher]

    @contextmanager
    def validation_probe(self) -> Iterator[dict[str, float]]:
        """The gate over the validation photos (val/gate_mean, val/gate_std): whether the fusion moved where
        it is scored, not only on the training batches (gate/mean); nothing without the gated fusion."""
        stats: dict[str, float] = {}
        if self.T_A.fusion is None:
            yield stats
            return
        acc = [0.0, 0.0, 0]  # sum, sum of squares, count (float64 on the host: many photos, small values)

        def record(module: nn.Module, inputs: Any, output: tuple[Tensor, Tensor]) -> None:
            g = output[1].detach().double()
            acc[0] += float(g.sum())
            acc[1] += float((g * g).sum())
            acc[2] += g.numel()

        handle = self.T_A.fusion.register_forward_hook(record)
        try:
            yield stats
        finally:
            handle.remove()
        if acc[2]:
            mean = acc[0] / acc[2]
            stats.update(gate_mean=mean, gate_std=max(acc[1] / acc[2] - mean * mean, 0.0) ** 0.5)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"translator": [*self.T_A.parameters(), *self.T_B.parameters()]}

    def param_subsets(self) -> dict[str, dict[str, list[nn.Parameter]]]:
        """`optim.translator.param_groups` may set gate (the fusion), transform (T_A's UTM), backward (T_B)."""
        subsets = {"transform": list(self.T_A.transform.parameters()), "backward": list(self.T_B.parameters())}
        if self.T_A.fusion is not None:
            subsets = {"gate": list(self.T_A.fusion.parameters()), **subsets}
        return {"translator": subsets}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"translator": {"type": "adamw", "lr": 1e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999]}}

    @torch.no_grad()
    def restore(self, degraded: Tensor) -> Tensor:
        return self.restorer(degraded).clamp(0, 1)

    def fuse(self, restored: Tensor, degraded: Tensor) -> tuple[Tensor, Tensor]:
        return self.T_A.fuse(restored, degraded)

    def owned_restorer(self) -> nn.Module | None:
        from taskbridge.restorers.identity import Identity

        return None if isinstance(self.restorer, Identity) else self.restorer

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        check_no_reference(self, reference)
        restored = self.restore(images)
        out = self.T_A(restored, images) if self.use_gfm else self.T_A(restored)
        return out.clamp(0, 1)

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        a, b = batch["A"], batch["B"]
        r = self.restore(a)
        fused, gate = self.fuse(r, a)
        return {"degraded": a, "restored": r, "fused": fused, "gate": gate.expand(-1, 3, -1, -1),
                "translated": self.T_A.transform(fused).clamp(0, 1), "clean": b,
                "clean_to_degraded": self.T_B(b).clamp(0, 1)}

    # ------------------------------------------------------------------ uncertainty helpers
    @property
    def _offset(self) -> float:
        return self.nuq.config.offset if self.nuq is not None else 0.5

    @property
    def _threshold(self) -> float:
        return self.nuq.config.threshold if self.nuq is not None else 0.99

    def _uncertainty(self, features: Tensor | None, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(u', u_epi) per row; without a NUQ every row gets u = 0, u' = offset (passes the filter)."""
        if self.nuq is None or n == 0:
            u = torch.zeros(n, device=device)
            return u + self._offset, u
        if features is None:
            raise ValueError("VaT: the task returned detections without features; NUQ needs the raw head "
                             "vectors (predict(return_features=True)) or set method.nuq to null")
        u = self.nuq.u_epi(features).to(device)
        return self.nuq.score_from_u(u), u

    def _weights(self, score: Tensor, u: Tensor) -> Tensor:
        return label_weights(self.mixup, score, u, self.weighting, self._offset, self._threshold,
                             self.umix_c, self.umix_eta)

    def _det_uncertainty(self, dets: list[Detections]) -> tuple[list[Tensor], list[Tensor]]:
        """u' and label weight per box, one NUQ query for the whole batch."""
        sizes = [len(d) for d in dets]
        dev = dets[0].boxes.device
        feats = [d.features for d in dets if len(d)]
        cat = None if not feats or any(f is None for f in feats) else torch.cat(feats)  # type: ignore[arg-type]
        score, u = self._uncertainty(cat, sum(sizes), dev)
        return list(score.split(sizes)), list(self._weights(score, u).split(sizes))

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def _translated_views(self, r: Tensor, a: Tensor, fused: Tensor, out: Tensor) -> list[Tensor]:
        """The fused and translated images the translation flow's pseudo-labels are predicted on: the
        trained network's, or its EMA teacher's."""
        if self.T_A_teacher is None:
            return [fused.detach(), out.detach().clamp(0, 1)]
        t_fused = self.T_A_teacher.fuse(r, a)[0]
        return [t_fused, self.T_A_teacher.transform(t_fused).clamp(0, 1)]

    def _shares(self) -> tuple[float, float]:
        if self.mixup == "none":
            return 0.0, 0.0
        return (sample_clean_share(self.mixup_alpha, self.mixup_sampler),
                sample_clean_share(self.mixup_alpha, self.mixup_sampler))

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        a, b = batch["A"], batch["B"]
        if a.shape != b.shape:
            raise ValueError(f"VaT needs A and B batches of equal shape (mixup), got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}; set the data pipeline's crop/resize for both domains")
        if self.use_mle:
            self.fit_nuq()
        r = self.restore(a)
        fused, gate = self.fuse(r, a)
        out = self.T_A.transform(fused)
        total = out.sum() * 0.0  # keeps a graph even if every term is skipped
        logs: dict[str, Tensor] = {"gate/mean": gate.detach().mean()}

        if self.use_cycle:
            cyc_f, cyc_b = cycle_loss(fused, out, b, self.T_A.transform, self.T_B)
            cyc = cyc_f + cyc_b
            self._check("cycle", cyc)
            total = total + self.cycle_weight * cyc
            logs.update({"cyc/total": cyc.detach(), "cyc/forward": cyc_f.detach(), "cyc/backward": cyc_b.detach()})

        if self.use_mle:
            if self.kind == "detection":
                truth = None if self.oracle is None else self.oracle.detections(batch, tuple(a.shape[-2:]), a.device)
                mle, mle_logs = self._mle_detection(a, r, b, fused, out, truth)
            else:
                truth = oracle_classes(batch).to(a.device) if self.oracle_classes else None
                mle, mle_logs = self._mle_classification(a, r, b, fused, out, truth)
            total = total + self.mle_weight * mle
            logs.update(mle_logs)
        if self.running_features is not None:  # feature_align > 0: through the gate and T, what the task model sees
            stats = self.running_features([channel_statistics(f) for f in self.task.feature_maps(out)])
            feat = statistics_loss(stats, self.clean_feature_targets())
            self._check("feature alignment", feat)
            total = total + self.feature_align * feat
            logs["feat/align"] = feat.detach()
        self._check("total", total)
        logs["loss/translator"] = total
        return logs

    @staticmethod
    def _check(name: str, value: Tensor) -> None:
        if not torch.isfinite(value.detach()).all():
            raise FloatingPointError(f"VaT: non-finite {name} loss ({float(value.detach())})")

    def _flow_loss(self, name: str, x: Tensor, targets: Any, bg: float | None = None) -> Tensor:
        raw = self.task.raw(x)
        loss = self.task.loss(raw, targets, background_weight=bg)[0] if self.kind == "detection" \
            else self.task.loss(raw, targets)[0]
        self._check(f"{name} flow", loss)
        return loss

    # ---------------------------------------------------------------- detection
    def _union(self, views: list[list[Detections]]) -> list[Detections]:
        """One side's pseudo-labels: the views' NMS union; with det_labels "agree", a box not found by every view
        is capped at conf_hi (uncertain); with "fuse", every box is the views' consensus."""
        union = union_nms(views, self.pseudo_iou, self.pseudo_max_det)
        if self.det_labels == "union":
            return union
        if self.det_labels == "fuse":
            return fuse_views(union, views, AGREE_IOU)
        return cap_scores(union, found_by_every_view(union, views, AGREE_IOU), self.conf_hi)

    def _mle_detection(self, a: Tensor, r: Tensor, b: Tensor, fused: Tensor, out: Tensor,
                       truth: list[Detections] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The three MLE flows; `truth` (oracle_labels) replaces the degraded side's pseudo-labels."""
        stride = int(getattr(self.task, "stride", 1))
        h, w = a.shape[-2:]
        if h % stride or w % stride:
            raise ValueError(f"VaT: image size {h}x{w} is not a multiple of the detector stride {stride}; "
                             "crop/resize training images accordingly")
        need_l = self.flows["translation"] and self.pseudo_views == "code" and truth is None
        with torch.no_grad():
            views = [b] + ([a, r] if truth is None else []) + (self._translated_views(r, a, fused, out) if need_l else [])
            pv = predict_views(self.task, views, self.pseudo_conf, self.pseudo_iou, self.pseudo_max_det, self.classes)
            y_hq = pv[0]
            s_hq, w_hq = self._det_uncertainty(y_hq)
            if truth is not None:
                y_lq = y_l = truth
                s_lq, w_lq = s_l, w_l = oracle_certain(truth)
            else:
                y_lq = self._union([pv[1], pv[2]])
                y_l = self._union([pv[3], pv[2], pv[1], pv[4]]) if need_l else y_lq
                s_lq, w_lq = self._det_uncertainty(y_lq)
                s_l, w_l = (s_lq, w_lq) if y_l is y_lq else self._det_uncertainty(y_l)
        share1, share2 = self._shares()
        hw = (h, w)
        zero = out.sum() * 0.0
        total, logs = zero, {"mix/clean_share": torch.tensor(share1, device=a.device),
                             "labels/conf_hi": torch.tensor(self.conf_hi, device=a.device)}

        def bg_of(tg: DetectionTargets) -> float | None:
            bg = background_weight(tg)
            return None if bg is None else bg * self.bg_weight

        def targets_of(parts: list[tuple[list[Detections], list[Tensor], list[Tensor] | None, float, float]],
                       tag: str) -> DetectionTargets:
            tgs = []
            for dets, scores, weights, share, conf_lo in parts:
                t, c = detections_to_targets(dets, scores, hw, share, weights, self.conf_hi, conf_lo, self._threshold)
                tgs.append(t)
                logs[f"labels/{tag}_certain"] = logs.get(f"labels/{tag}_certain", zero.detach()) + c.certain
                logs[f"labels/{tag}_uncertain"] = logs.get(f"labels/{tag}_uncertain", zero.detach()) + c.uncertain
            return DetectionTargets.cat(tgs).to(a.device)

        if self.flows["fusion"]:
            tg = targets_of([(y_lq, s_lq, w_lq, 1.0 - share1, self.conf_lo), (y_hq, s_hq, w_hq, share1, self.conf_lo)],
                            "fusion")
            if len(tg):
                loss = self._flow_loss("fusion", mix(fused, b, share1), tg, bg_of(tg))
                total = total + loss
                logs["mle/fusion"] = loss.detach()
        if self.flows["translation"]:
            src, y_src, s_src, w_src = fused.detach(), y_l, s_l, w_l
            if self.augment is not None:  # boxes may be dropped or move between images: scores/weights follow
                src, y_src, origin = augment_batch_with_origin(src, y_l, self.augment)
                s_src, w_src = gather_rows(s_l, origin), gather_rows(w_l, origin)
            tg = targets_of([(y_src, s_src, w_src, 1.0 - share2, self.conf_lo),
                             (y_hq, s_hq, w_hq, share2, self.conf_lo)], "translation")
            if len(tg):
                x = self.T_A.transform(mix(src, b, share2))
                loss = self._flow_loss("translation", x, tg, bg_of(tg))
                total = total + loss
                logs["mle/translation"] = loss.detach()
        if self.flows["hq"]:
            tg = targets_of([(y_hq, s_hq, None, 1.0, self.conf_hi)], "hq")
            if len(tg):
                loss = self._flow_loss("hq", self.T_A.transform(b), tg, bg_of(tg))
                total = total + loss
                logs["mle/hq"] = loss.detach()
        logs["mle/total"] = total.detach()
        return total, logs

    # ---------------------------------------------------------------- classification
    def certain_class_labels(self, logits_views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The classification pseudo-labels of one side: (label, certain, u', u_epi) per image; the label is the
        most confident view's, certain when its top probability passes conf_hi and NUQ's u' the threshold (and,
        with cls_labels "agree", when every view names that class)."""
        labels, conf, feats = classification_pseudo_labels(logits_views)
        score, u = self._uncertainty(feats, labels.shape[0], labels.device)
        certain = (conf > self.conf_hi) & (score < self._threshold)
        if self.cls_labels == "agree":
            for view in logits_views[1:]:
                certain = certain & (view.argmax(-1) == logits_views[0].argmax(-1))
        return labels, certain, score, u

    def _cls_rows(self, logits_views: list[Tensor], share: float, hard: bool = False) -> tuple[Tensor, int]:
        """Soft target rows share * weight * one-hot for the certain labels of one side."""
        labels, certain, score, u = self.certain_class_labels(logits_views)
        weight = torch.ones_like(score) if hard else self._weights(score, u)
        if share <= 0:
            certain = torch.zeros_like(certain)
        rows = F.one_hot(labels, logits_views[0].shape[1]).float() * (share * weight * certain)[:, None]
        return rows, int(certain.sum())

    def _mle_classification(self, a: Tensor, r: Tensor, b: Tensor, fused: Tensor, out: Tensor,
                            truth: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The three MLE flows; `truth` (oracle_labels: data) replaces the degraded side's pseudo-labels."""
        need_l = self.flows["translation"] and self.pseudo_views == "code" and truth is None
        with torch.no_grad():
            views = [b, a, r] + (self._translated_views(r, a, fused, out) if need_l else [])
            logits = self.task.raw(torch.cat(views)).float().chunk(len(views))
        share1, share2 = self._shares()
        total = out.sum() * 0.0
        logs: dict[str, Tensor] = {"mix/clean_share": torch.tensor(share1, device=a.device)}
        n_classes = logits[0].shape[1]

        def degraded(views: list[Tensor], share: float) -> tuple[Tensor, int]:
            if truth is None:
                return self._cls_rows(views, share)
            return oracle_class_rows(truth, n_classes, share)

        def run(name: str, x_fn, parts: list[tuple[Tensor, int]]) -> None:
            nonlocal total
            rows, n = zip(*parts, strict=True)
            soft = torch.stack(rows).sum(0)
            logs[f"labels/{name}_certain"] = torch.tensor(float(sum(n)), device=a.device)
            if bool((soft.sum(1) > 0).any()):
                loss = self._flow_loss(name, x_fn(), ClassificationTargets(soft))
                total = total + loss
                logs[f"mle/{name}"] = loss.detach()

        lq = [logits[1], logits[2]]
        l_views = [logits[3], logits[2], logits[1], logits[4]] if need_l else lq
        if self.flows["fusion"]:
            run("fusion", lambda: mix(fused, b, share1),
                [degraded(lq, 1.0 - share1), self._cls_rows([logits[0]], share1)])
        if self.flows["translation"]:
            run("translation", lambda: self.T_A.transform(mix(fused.detach(), b, share2)),
                [degraded(l_views, 1.0 - share2), self._cls_rows([logits[0]], share2)])
        if self.flows["hq"]:
            run("hq", lambda: self.T_A.transform(b), [self._cls_rows([logits[0]], 1.0, hard=True)])
        logs["mle/total"] = total.detach()
        return total, logs
