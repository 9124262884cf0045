"""ODCR's weighted PatchNCE (Eqs. 8-14, REFERENCE 2.3): the channel classifier DWFC and the WPNCE loss.

DWFC holds per layer two linear classifiers theta_h, theta_c on projected patches (hazy vs clear,
Eq. 8) whose |theta (.) x| softmax weights pick channels (Eqs. 9-10); `wpnce_loss` is the weighted
PatchNCE of Eqs. 11-14 on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.registry import LOSSES


@LOSSES.register("dwfc")
class DWFC(nn.Module):
    """ODCR's haze/clear channel classifier of one layer: theta_h, theta_c in R^D, no bias (Eq. 8)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(2, dim) * dim**-0.5)

    def logits(self, x: Tensor) -> Tensor:
        """[..., D] -> [..., 2] = (theta_h^T x, theta_c^T x)."""
        return x @ self.theta.t()

    def ce(self, x: Tensor, hazy: bool) -> Tensor:
        """Eq. 8 (negated log-likelihood), summed over j in {h, c}, mean over patches."""
        logits = self.logits(x)
        target = torch.zeros_like(logits)
        target[..., 0 if hazy else 1] = 1.0
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()

    def weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Eqs. 9-10: w_h = softmax(|theta_h (.) x|), w_c = softmax(|theta_c (.) x|) over channels."""
        w_h = torch.softmax((self.theta[0] * x).abs(), dim=-1)
        w_c = torch.softmax((self.theta[1] * x).abs(), dim=-1)
        return w_h, w_c


def wpnce_loss(
    q: Tensor,
    k_h: Tensor,
    k_c: Tensor,
    w_h: Tensor,
    w_c: Tensor,
    tau: float = 0.07,
    swap_weights: bool = False,
    weight_scale: float = 1.0,
) -> Tensor:
    """Eqs. 11-14 per query patch, [B, S].

    q: [B, S, D] queries z; k_h: [B, S, D] patches of the hazy input (k_h[:, s] = z_{+-} of
    q[:, s], the others z_{--}); k_c: [B, N, D] patches of the clear image (z_{-+}); w_h, w_c:
    [B, S, D] per-query channel weights. l(w, z1, z2) = exp((w (.) z2)^T z1 / tau) (Eq. 11),
    P = l(w_h, z, z_{+-}) + sum_n l(w_c, z, z_{-+}^n) (Eq. 12),
    N = l(1 - w_h, z, z_{+-}) + sum_n l(1, z, z_{--}^n) + sum_n l(1 - w_c, z, z_{-+}^n) (Eq. 13),
    L = -log(P / (P + N)) (Eq. 14), evaluated with log-sum-exp. `weight_scale` multiplies the
    weights w_h, w_c (not their complements 1 - w).
    """
    if q.dim() != 3 or k_h.shape != q.shape or w_h.shape != q.shape or w_c.shape != q.shape:
        raise ValueError(
            f"q, k_h, w_h, w_c must all be [B, S, D]; got {tuple(q.shape)}, {tuple(k_h.shape)}, "
            f"{tuple(w_h.shape)}, {tuple(w_c.shape)}"
        )
    if k_c.dim() != 3 or k_c.shape[0] != q.shape[0] or k_c.shape[2] != q.shape[2]:
        raise ValueError(f"k_c must be [B, N, D] matching q {tuple(q.shape)}, got {tuple(k_c.shape)}")
    s = q.shape[1]
    wh_pos, wh_neg = weight_scale * w_h, 1.0 - w_h
    if swap_weights:
        wh_pos, wh_neg = 1.0 - w_h, weight_scale * w_h
    kt_c = k_c.transpose(1, 2)
    pos_h = (wh_pos * q * k_h).sum(-1, keepdim=True) / tau  # B, S, 1
    neg_h = (wh_neg * q * k_h).sum(-1, keepdim=True) / tau
    pos_c = torch.bmm(weight_scale * w_c * q, kt_c) / tau  # B, S, N
    neg_c = torch.bmm((1.0 - w_c) * q, kt_c) / tau
    neg_hh = torch.bmm(q, k_h.transpose(1, 2)) / tau  # B, S, S
    neg_hh = neg_hh.masked_fill(torch.eye(s, dtype=torch.bool, device=q.device), float("-inf"))
    log_p = torch.logsumexp(torch.cat([pos_h, pos_c], -1), -1)
    log_all = torch.logsumexp(torch.cat([pos_h, pos_c, neg_h, neg_hh, neg_c], -1), -1)
    return log_all - log_p
