"""Mixup of fused degraded images with clean images (paper Eq. 7) and the label weights it implies.

I_mix = (1 - a) * I_F + a * I_HQ, where a is the *clean* share. Two samplers:

* ``code`` (reference code): b ~ Beta(alpha, alpha), a = min(b, 1 - b), so the clean share is
  <= 0.5 and the degraded image always dominates;
* ``paper``: lambda ~ Beta(alpha, alpha) is the degraded share, a = 1 - lambda.

Label weights per side (degraded side share 1 - a, clean side share a), by mode:

* ``none``: no mixing (a = 0), degraded labels weight 1 (filtering still applies);
* ``plain``: a = share (classic mixup, no uncertainty);
* ``uncertainty``: share * w(u') with the chosen weighting direction (Eq. 7; `certainty.uncertainty_weight`);
* ``umix``: share * (c + eta * u_epi), the UMix importance weight (Han et al., NeurIPS 2022), which
  always up-weights uncertain samples; with c = 0.5, eta = 500 it equals Eq. 7 with ``official``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from taskbridge.uncertainty.certainty import uncertainty_weight

MIXUPS = ("none", "plain", "uncertainty", "umix")
SAMPLERS = ("code", "paper")


def sample_clean_share(alpha: float = 0.5, sampler: str = "code") -> float:
    """Clean-image share a of one mixed batch (torch's global RNG, so seeding reproduces it)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown mixup sampler '{sampler}'; use one of {', '.join(SAMPLERS)}")
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    beta = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    return min(beta, 1.0 - beta) if sampler == "code" else 1.0 - beta


def mix(degraded_side: Tensor, clean_side: Tensor, clean_share: float) -> Tensor:
    if degraded_side.shape != clean_side.shape:
        raise ValueError(f"mixup needs equal shapes, got {tuple(degraded_side.shape)} and {tuple(clean_side.shape)}; "
                         "resize/crop A and B to the same size in the data pipeline")
    if clean_share == 0:
        return degraded_side
    return (1.0 - clean_share) * degraded_side + clean_share * clean_side


def label_weights(
    mode: str, score: Tensor, u: Tensor, weighting: str = "official",
    offset: float = 0.5, threshold: float = 0.99, umix_c: float = 0.5, umix_eta: float = 500.0,
) -> Tensor:
    """Per-label weight of one side of the mix, *before* multiplying by that side's share
    (`certainty.detections_to_targets` applies the share)."""
    if mode in ("none", "plain"):
        return torch.ones_like(score)
    if mode == "uncertainty":
        return uncertainty_weight(score, weighting, offset, threshold)
    if mode == "umix":
        return umix_c + umix_eta * u
    raise ValueError(f"unknown mixup '{mode}'; use one of {', '.join(MIXUPS)}")
