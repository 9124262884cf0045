"""Bootstrap over images: how much a score would move on another draw of the same number of photos.

A 30- or 50-photo detection split is scored by a mean over five classes, some with 3-12 boxes, so one
detection more or less moves mAP50 by points. Resampling the images with replacement and rescoring gives
the score's standard error and a percentile interval. The resamples depend only on (number of images,
`n`, `seed`), so two rows scored on the same image list with the same seed share them: the difference of
their samples is a *paired* bootstrap of the difference (`paired_difference`), which is what a comparison
of two pipelines on one split needs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from taskbridge.metrics.detection import ImageBoxes, class_ap, ranked_pr, voc_match_image

DEFAULT_SEED = 0


def resample_indices(n_items: int, n: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """[n, n_items] image indices drawn with replacement; the same for every caller with the same arguments."""
    if n_items < 1:
        raise ValueError("bootstrap: no images to resample")
    return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))


def images_key(names: Sequence[str]) -> str:
    """A short fingerprint of the image list: resamples pair only between scores of the same images, in order."""
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]


def _values(samples: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in samples], dtype=np.float64)  # JSON writes NaN as null


def summary(samples: np.ndarray, seed: int, images: str) -> dict:
    """Standard error and 95 % percentile interval of bootstrap samples, with the samples kept for pairing."""
    s = _values(samples)
    finite = s[np.isfinite(s)]
    spread = {"se": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
              "ci95": [float(np.percentile(finite, q)) if len(finite) else float("nan") for q in (2.5, 97.5)]}
    return {"resamples": len(s), "seed": seed, "images": images, **spread,
            "samples": [round(float(v), 6) for v in s]}


def bootstrap_top1(correct: np.ndarray, n: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Top-1 accuracy of `n` resamples of the images (`correct`: one 0/1 per image)."""
    c = np.asarray(correct, dtype=np.float64)
    return c[resample_indices(len(c), n, seed)].mean(axis=1)


def bootstrap_voc_map(
    preds: Sequence[ImageBoxes],
    targets: Sequence[ImageBoxes],
    num_classes: int,
    n: int,
    seed: int = DEFAULT_SEED,
    iou_thres: float = 0.5,
    use_11_point: bool = False,
) -> np.ndarray:
    """VOC mAP (mean over the classes with ground truth in the resample) of `n` resamples of the images.

    Each image is matched once per class; a resample ranks the flags of the images it drew (an image drawn
    twice counts twice), exactly as scoring the resampled list with `voc_detection_ap` would.
    """
    matched = [[voc_match_image(p, t, c, iou_thres) for p, t in zip(preds, targets, strict=True)]
               for c in range(num_classes)]
    out = np.empty(n)
    for b, idx in enumerate(resample_indices(len(preds), n, seed)):
        aps = []
        for per_image in matched:
            ap = class_ap(*ranked_pr([per_image[i] for i in idx]), use_11_point)
            if not math.isnan(ap):
                aps.append(ap)
        out[b] = np.mean(aps) if aps else np.nan
    return out


def difference_samples(a: dict, b: dict) -> np.ndarray | None:
    """b minus a, resample by resample; None when the two were not resampled alike (other seed, count or images),
    so unpaired samples are never mixed."""
    if not a or not b or any(a.get(k) != b.get(k) for k in ("seed", "resamples", "images")):
        return None
    return _values(b["samples"]) - _values(a["samples"])


def difference_summary(d: np.ndarray) -> dict | None:
    """Mean, standard error, 95 % interval and share of resamples above 0 of per-resample differences."""
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return None
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1)),
            "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "p_better": float((d > 0).mean())}


def paired_difference(a: dict, b: dict) -> dict | None:
    """b minus a over shared resamples (`difference_summary`); None when they cannot be paired."""
    d = difference_samples(a, b)
    return None if d is None else difference_summary(d)
