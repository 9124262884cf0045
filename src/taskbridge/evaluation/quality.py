"""`evaluate_quality`: image quality (PSNR / SSIM / NIQE) of what the evaluation pipeline feeds the task.

The degraded images are synthesised exactly as `evaluate_detection` / `evaluate_classification`
do (same reader, same `seed + index` / `seed + batch` seeding), so the scored images are the ones
the task saw. PSNR and SSIM need the clean image and are only computed when `degrade` synthesised
the degraded one; NIQE (no reference) is computed whenever an image is large enough for it.
`ssim_input` is the SSIM of the task input to the degraded image it came from: content preservation
of the image stages (1 for the plain input; Hierarchy Flow's reason to exist).
Detection photos are scored at their native resolution, after the image stages and the 8-bit
quantisation of the detection protocol (the image the detector's letterbox starts from);
classification images at their native size, as the classifier sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from taskbridge.data.io import ImageReadError, read_image
from taskbridge.degrade.base import run_degradation
from taskbridge.evaluation.datasets import ClassificationArrays, DetectionFolder
from taskbridge.evaluation.detection import degrade_photo, run_stages
from taskbridge.metrics.niqe import PATCH as NIQE_MIN_SIZE
from taskbridge.metrics.quality import NIQE, PSNR, SSIM

REFERENCE = "clean image before --degrade"


class _Scores:
    """Per-image scores of the three metrics, plus why NIQE skipped some images."""

    def __init__(self, with_reference: bool) -> None:
        self.psnr_m, self.ssim_m, self.niqe_m = PSNR(), SSIM(), NIQE()
        self.with_reference = with_reference
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.ssim_input: list[float] = []
        self.niqe: list[float] = []
        self.skipped: dict[str, int] = {}
        self.count = 0

    def add(self, out: Tensor, clean: Tensor, source: Tensor | None = None) -> None:
        """Score a batch `out` [B, 3, H, W] (against `clean` when the reference is known, and against the
        degraded `source` it was made from)."""
        if out.shape != clean.shape:
            raise ValueError(
                f"quality: the pipeline returned {tuple(out.shape)} for input {tuple(clean.shape)}; it must keep "
                "the input's size to be scored against the clean image"
            )
        self.count += out.shape[0]
        if self.with_reference:
            self.psnr += self.psnr_m(out, clean).tolist()
            self.ssim += self.ssim_m(out, clean).tolist()
        if source is not None:  # an image stage that left the input as it was scores 1 without the SSIM pass
            source = source.to(out.dtype)
            self.ssim_input += [1.0] * len(out) if torch.equal(out, source) else self.ssim_m(out, source).tolist()
        h, w = out.shape[-2:]
        if min(h, w) < NIQE_MIN_SIZE:
            self._skip(f"smaller than NIQE's {NIQE_MIN_SIZE}x{NIQE_MIN_SIZE} pixel minimum", out.shape[0])
            return
        for img in out:
            try:
                self.niqe += self.niqe_m(img[None]).tolist()
            except ValueError as err:  # e.g. a flat (constant) image has too few usable blocks
                self._skip(str(err).split(" (")[0], 1)  # drop per-image details so reasons group

    def _skip(self, reason: str, n: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @staticmethod
    def _mean(v: list[float]) -> float | None:
        return sum(v) / len(v) if v else None

    def summary(self) -> dict:
        skipped = "; ".join(f"{n} image(s): {r}" for r, n in self.skipped.items()) or None
        return {
            "psnr": self._mean(self.psnr), "ssim": self._mean(self.ssim), "niqe": self._mean(self.niqe),
            "ssim_input": self._mean(self.ssim_input),
            "num_images": self.count, "niqe_images": len(self.niqe), "niqe_skipped": skipped,
            "reference": REFERENCE if self.with_reference else None,
        }

    def settings(self) -> dict:
        return {"psnr": self.psnr_m.settings(), "ssim": self.ssim_m.settings(), "niqe": self.niqe_m.settings()}


def _device(pipeline: Callable[[Tensor], Tensor] | None, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    params = getattr(pipeline, "parameters", None)
    return next((p.device for p in params()), torch.device("cpu")) if callable(params) else torch.device("cpu")


def _run(pipeline: Callable[[Tensor], Tensor] | None, x: Tensor, dev: torch.device) -> Tensor:
    if pipeline is None:
        return x
    with torch.no_grad():
        return pipeline(x.to(dev)).float().cpu()


def evaluate_quality(
    dataset: DetectionFolder | ClassificationArrays,
    pipeline: Callable[[Tensor], Tensor] | None = None,
    *,
    degrade: Callable[[Tensor], object] | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    on_bad: Callable[[str, str], None] | None = None,
) -> dict:
    """Mean PSNR / SSIM (vs the clean image, only with `degrade`) and NIQE of the pipeline's outputs.

    `pipeline` maps a degraded batch [B, 3, H, W] to the task input (None = the degraded image
    itself). Detection: image i is degraded under `seed + i`; classification: batch b of
    `batch_size` images under `seed + b`, as in the task evaluations.
    """
    dev = _device(pipeline, device)
    scores = _Scores(with_reference=degrade is not None)
    t0 = time.perf_counter()
    if isinstance(dataset, ClassificationArrays):
        kind, resolution = "classification", "native (classification)"
        n = len(dataset) if limit is None else min(len(dataset), limit)
        starts: range | object = range(0, n, batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="quality", unit="batch")
        for b, s in enumerate(starts):  # type: ignore[arg-type]
            clean = dataset.images[s: min(s + batch_size, n)]
            x = run_degradation(degrade, clean, seed + b) if degrade is not None else clean
            scores.add(_run(pipeline, x, dev), clean, x)
    elif isinstance(dataset, DetectionFolder):
        kind, resolution = "detection", "original resolution (detection)"
        n = len(dataset) if limit is None else min(len(dataset), limit)
        idx: range | object = range(n)
        if progress:
            from tqdm import tqdm

            idx = tqdm(idx, desc="quality", unit="img")
        for i in idx:  # type: ignore[union-attr]
            try:
                clean = read_image(dataset.items[i][0])  # the reader DetectionFolder.__getitem__ uses
            except ImageReadError as err:
                if on_bad is None:
                    raise
                on_bad(str(dataset.items[i][0]), str(err))
                continue
            source = degrade_photo(degrade, clean, seed + i)
            x = run_stages(pipeline, source, dev)
            scores.add(x[None].float().cpu(), clean[None], source[None].float().cpu())
    else:
        raise TypeError(
            f"evaluate_quality: expected a DetectionFolder or ClassificationArrays, got {type(dataset).__name__}"
        )
    result = scores.summary()
    result.update({
        "kind": kind,
        "settings": {
            "resolution": resolution,
            "pipeline_input": "the degraded image at its own size (detection: not letterboxed, 8-bit after the stages)",
            "metrics": scores.settings(),
            "niqe_min_size": NIQE_MIN_SIZE,
            "pipeline": getattr(pipeline, "describe", lambda: repr(pipeline))() if pipeline is not None else None,
            "degradation": repr(degrade) if degrade is not None else None, "seed": seed, "limit": limit,
            **({"batch_size": batch_size} if kind == "classification" else {}),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    })
    return result
