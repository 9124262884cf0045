"""NUQ: nonparametric uncertainty quantification (Kotelevskii et al., NeurIPS 2022) as VaT uses it.

A fitted k-NN kernel regressor of a confidence target y (YOLO objectness, or a classifier's top
probability) on the task model's raw output vector x. For a query q (REFERENCE §1.4):

* neighbours: the k fit points with the highest cosine similarity to q (L2-normalised features);
* kernel: K_i = exp(-||x_i - q||^2 / (2 h^2)) on the *unnormalised* features;
* with S = 1 + sum K_i: y1 = (sum K_i y_i + mean y) / S, y2 = (sum K_i y_i^2 + mean y^2) / S,
  u_epi = (y2 - y1^2) / S. The prior term (the "+1", "+mean") pulls queries far from every fit
  point to a high u, which is what makes it an out-of-distribution signal.
* score u' = scale * u_epi + offset (official 500, 0.5); a pseudo-label is kept if u' < threshold (0.99).

h, scale and threshold belong to one detector's feature scale: `refit_bandwidth` (median k-NN
distance) and `calibrate` (a quantile of u on held-out clean detections maps to the threshold)
re-derive them for another model. The query is fully vectorised (chunked matmul + top-k).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

OFFICIAL_BANDWIDTH = 11.037089
OFFICIAL_SCALE = 500.0
OFFICIAL_OFFSET = 0.5
OFFICIAL_THRESHOLD = 0.99


@dataclass
class NUQConfig:
    """Everything besides the fit set needed to reproduce a query (saved as JSON)."""

    k: int = 20
    bandwidth: float = OFFICIAL_BANDWIDTH
    scale: float = OFFICIAL_SCALE
    offset: float = OFFICIAL_OFFSET
    threshold: float = OFFICIAL_THRESHOLD
    split: str | None = None  # declared split of unmodified images the fit set comes from
    info: dict[str, Any] = field(default_factory=dict)  # provenance: model, conf, calibration...


class NUQ:
    """Fitted NUQ regressor: ``fit(features, targets)``, ``u_epi(q)``, ``score(q)``, ``accept(score)``."""

    def __init__(self, config: NUQConfig | None = None, **overrides: Any) -> None:
        self.config = config or NUQConfig()
        for key, value in overrides.items():
            if not hasattr(self.config, key):
                raise TypeError(f"NUQ: unknown option '{key}'; accepted: {', '.join(asdict(self.config))}")
            setattr(self.config, key, value)
        self.features: Tensor | None = None
        self.targets: Tensor | None = None
        self._cache: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, features: Tensor, targets: Tensor) -> NUQ:
        features = torch.as_tensor(features).detach().float().cpu()
        targets = torch.as_tensor(targets).detach().float().cpu().reshape(-1)
        if features.ndim != 2 or features.shape[0] != targets.shape[0]:
            raise ValueError(f"NUQ.fit: features must be [N, F] and targets [N], got {tuple(features.shape)} "
                             f"and {tuple(targets.shape)}")
        if features.shape[0] == 0:
            raise ValueError("NUQ.fit: no fit points (no detections on the fit images? lower conf_thres)")
        if not (torch.isfinite(features).all() and torch.isfinite(targets).all()):
            raise ValueError("NUQ.fit: non-finite features or targets")
        self.features, self.targets = features, targets
        self._cache.clear()
        return self

    @property
    def fitted(self) -> bool:
        return self.features is not None

    @property
    def feature_dim(self) -> int:
        self._check()
        assert self.features is not None
        return int(self.features.shape[1])

    def _check(self) -> None:
        if self.features is None or self.targets is None:
            raise RuntimeError("NUQ is not fitted: call fit() or NUQ.load(path)")

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._cache:
            assert self.features is not None and self.targets is not None
            x = self.features.to(device)
            self._cache[device] = (x, F.normalize(x, dim=1), self.targets.to(device))
        return self._cache[device]

    # ------------------------------------------------------------------ query
    @torch.no_grad()
    def u_epi(self, query: Tensor, chunk: int = 4096) -> Tensor:
        """Epistemic uncertainty per query row ([M, F] -> [M]), vectorised in chunks."""
        self._check()
        q_all = torch.as_tensor(query).detach().float()
        if q_all.ndim != 2 or q_all.shape[1] != self.feature_dim:
            raise ValueError(f"NUQ query must be [M, {self.feature_dim}], got {tuple(q_all.shape)} "
                             "(was the NUQ fitted on another model's features?)")
        x, xn, y = self._on(q_all.device)
        k = min(self.config.k, x.shape[0])
        inv = 1.0 / (2.0 * float(self.config.bandwidth) ** 2)
        prior1, prior2 = y.mean(), (y * y).mean()
        out = []
        for q in q_all.split(chunk):
            idx = (F.normalize(q, dim=1) @ xn.T).topk(k, dim=1).indices  # [m, k]
            d2 = (x[idx] - q[:, None, :]).pow(2).sum(-1)
            kern = torch.exp(-d2 * inv)
            yi = y[idx]
            s = 1.0 + kern.sum(1)
            y1 = ((kern * yi).sum(1) + prior1) / s
            y2 = ((kern * yi * yi).sum(1) + prior2) / s
            out.append(((y2 - y1 * y1) / s).clamp_min(0.0))
        return torch.cat(out) if out else q_all.new_zeros(0)

    def score_from_u(self, u: Tensor) -> Tensor:
        return u * self.config.scale + self.config.offset

    def score(self, query: Tensor) -> Tensor:
        """u' = scale * u_epi + offset."""
        return self.score_from_u(self.u_epi(query))

    def accept(self, score: Tensor) -> Tensor:
        return score < self.config.threshold

    # ------------------------------------------------------------------ refitting for another model
    @torch.no_grad()
    def refit_bandwidth(self, max_points: int = 4096) -> float:
        """h = median Euclidean distance from a fit point to its k cosine neighbours (itself excluded)."""
        self._check()
        x, xn, _ = self._on(torch.device("cpu"))
        n = x.shape[0]
        if n < 2:
            raise ValueError("NUQ.refit_bandwidth needs at least 2 fit points")
        sel = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_points]
        sim = xn[sel] @ xn.T
        sim[torch.arange(sel.numel()), sel] = -math.inf  # leave-one-out
        idx = sim.topk(min(self.config.k, n - 1), dim=1).indices
        dist = (x[idx] - x[sel][:, None, :]).norm(dim=-1)
        h = float(dist.median())
        self.config.bandwidth = max(h, 1e-6)
        self.config.info["bandwidth_rule"] = "median kNN distance"
        return self.config.bandwidth

    @torch.no_grad()
    def calibrate(self, heldout_features: Tensor, quantile: float = 0.95) -> float:
        """Rescale u' so that the `quantile` of u on held-out clean detections sits at the threshold.

        Keeps offset and threshold (so weights stay in the official [offset, threshold) range);
        only `scale` changes. Returns the new scale.
        """
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"NUQ.calibrate: quantile must be in (0, 1), got {quantile}")
        u = self.u_epi(heldout_features)
        if u.numel() == 0:
            raise ValueError("NUQ.calibrate: no held-out detections")
        q = float(torch.quantile(u.double(), quantile))
        margin = self.config.threshold - self.config.offset
        self.config.scale = margin / max(q, 1e-12)
        self.config.info.update(calibration_quantile=quantile, calibration_u=q, calibration_n=int(u.numel()))
        return self.config.scale

    # ------------------------------------------------------------------ serialisation
    def save(self, path: str | Path) -> Path:
        """One safetensors file: tensors `features`, `targets`; the JSON config in its metadata."""
        from safetensors.torch import save_file

        self._check()
        assert self.features is not None and self.targets is not None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"features": self.features.contiguous(), "targets": self.targets.contiguous()}, str(tmp),
                  metadata={"format": "taskbridge.nuq/1", "config": json.dumps(asdict(self.config))})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NUQ:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NUQ file not found: {path} (fit one with fit_nuq_from_detector)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "taskbridge.nuq/1" or "config" not in meta:
                raise ValueError(f"{path}: not a taskbridge NUQ file (metadata format {meta.get('format')!r})")
            features, targets = f.get_tensor("features"), f.get_tensor("targets")
        nuq = cls(NUQConfig(**json.loads(meta["config"])))
        return nuq.fit(features, targets)


# ---------------------------------------------------------------------- fitting from a task model
def device_of(module: Any) -> torch.device:
    """Device of a module's first parameter or buffer (CPU when it has neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def _batches(images: Iterable[Tensor] | Tensor, batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(batch_size) if images.ndim == 4 else [images[None]]
        return
    for item in images:
        yield item if item.ndim == 4 else item[None]


@torch.no_grad()
def collect_detector_features(
    task: Any, images: Iterable[Tensor] | Tensor, conf_thres: float = 0.1, iou_thres: float = 0.6,
    max_det: int = 300, batch_size: int = 8, device: torch.device | str | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per image: raw head vectors and objectness of post-NMS detections (conf >= conf_thres, best class)."""
    feats, targs = [], []
    dev = torch.device(device) if device is not None else device_of(task)
    for batch in _batches(images, batch_size):
        dets = task.predict(batch.to(dev), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                            multi_label=False, return_features=True)
        for d in dets:
            if d.features is None:
                raise ValueError("NUQ needs detections with features (raw head vectors): the task's "
                                 "predict(return_features=True) returned none")
            y = d.objectness if d.objectness is not None else d.scores
            feats.append(d.features.float().cpu())
            targs.append(y.float().cpu())
    return feats, targs


@torch.no_grad()
def collect_classifier_features(
    task: Any, images: Iterable[Tensor] | Tensor, batch_size: int = 64, device: torch.device | str | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per image: logits (feature) and top softmax probability (target) of a classifier."""
    feats, targs = [], []
    dev = torch.device(device) if device is not None else device_of(task)
    for batch in _batches(images, batch_size):
        logits = task.raw(batch.to(dev)).float()
        for row in logits:
            feats.append(row[None].cpu())
            targs.append(row.softmax(0).max()[None].cpu())
    return feats, targs


def fit_nuq(
    feats: list[Tensor], targs: list[Tensor], split: str, refit: bool = True, holdout: float = 0.2,
    quantile: float = 0.95, k: int = 20, info: dict[str, Any] | None = None,
) -> NUQ:
    """Fit from per-image feature lists. With `refit`, every round(1/holdout)-th image is held out for
    threshold calibration and h is the median k-NN distance; without it the official constants stay."""
    nuq = NUQ(NUQConfig(k=k, split=split, info=dict(info or {})))
    n_img = len(feats)
    if refit:
        every = max(2, round(1.0 / holdout)) if holdout > 0 else 0
        held = [i for i in range(n_img) if every and i % every == every - 1]
        if not held and every and n_img >= 2:
            held = [n_img - 1]  # few images: still calibrate on one held-out image
        held_set = set(held)
        fit_idx = [i for i in range(n_img) if i not in held_set]
    else:
        held, fit_idx = [], list(range(n_img))
    x = torch.cat([feats[i] for i in fit_idx]) if fit_idx else torch.zeros(0, 1)
    y = torch.cat([targs[i] for i in fit_idx]) if fit_idx else torch.zeros(0)
    nuq.fit(x, y)
    nuq.config.info.update(n_images=n_img, n_fit=int(x.shape[0]))
    if refit:
        nuq.refit_bandwidth()
        hx = [feats[i] for i in held if feats[i].numel()]
        if hx:
            nuq.calibrate(torch.cat(hx), quantile)
        else:
            warnings.warn("fit_nuq: no held-out detections, threshold not calibrated (official scale kept); "
                          "fit on more images", stacklevel=2)
    return nuq


def fit_nuq_from_detector(
    task: Any, images: Iterable[Tensor] | Tensor, split: str, conf_thres: float = 0.1, iou_thres: float = 0.6,
    max_det: int = 300, refit: bool = True, holdout: float = 0.2, quantile: float = 0.95, k: int = 20,
    batch_size: int = 8, device: torch.device | str | None = None,
) -> NUQ:
    """Fit NUQ on the post-NMS detections of *unmodified* clean images of a declared split.

    The official code fitted on images added to themselves (2x brightness); we never modify them.
    `refit=False` keeps the official h / scale / threshold (only valid for the official detector).
    """
    feats, targs = collect_detector_features(task, images, conf_thres, iou_thres, max_det, batch_size, device)
    info = {"model": type(task).__name__, "kind": "detection", "conf_thres": conf_thres, "iou_thres": iou_thres,
            "max_det": max_det, "target": "objectness"}
    return fit_nuq(feats, targs, split, refit, holdout, quantile, k, info)


def fit_nuq_from_classifier(
    task: Any, images: Iterable[Tensor] | Tensor, split: str, refit: bool = True, holdout: float = 0.2,
    quantile: float = 0.95, k: int = 20, batch_size: int = 64, device: torch.device | str | None = None,
) -> NUQ:
    """Classification analogue: feature = logits, target = top softmax probability."""
    feats, targs = collect_classifier_features(task, images, batch_size, device)
    info = {"model": type(task).__name__, "kind": "classification", "target": "max_prob"}
    return fit_nuq(feats, targs, split, refit, holdout, quantile, k, info)
