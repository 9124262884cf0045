"""PatchNCE (CUT, REFERENCE 2.2): multilayer patchwise InfoNCE between output and input features.

Pieces, each usable alone:
* `sample_locations` / `gather_patches`: one random set of locations per layer, drawn on the
  source features and reused for the output (same ids for every image of the batch).
* `PatchProjector`: per-layer heads Linear(C_l, nc)-ReLU-Linear(nc, nc) + L2 normalisation,
  built **eagerly** from the generator's tap channel counts (no lazy first iteration; DDP and
  optimizers see every parameter from `__init__`).
* `patch_nce_loss`: Eq. 3 with negatives from the same image; the batch size comes from the
  tensor (the reference reshaped by the configured batch size, wrong on a short last batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from taskbridge.registry import LOSSES


def l2_normalize(x: Tensor, eps: float = 1e-7) -> Tensor:
    """x / (||x||_2 + eps) over the last dimension (the reference's Normalize)."""
    return x / (x.norm(p=2, dim=-1, keepdim=True) + eps)


def sample_locations(feat: Tensor, num_patches: int, generator: torch.Generator | None = None) -> Tensor:
    """Random distinct flat locations (CPU RNG, moved to the feature's device; cf. CUT #83)."""
    hw = feat.shape[-2] * feat.shape[-1]
    ids = torch.randperm(hw, generator=generator)[: min(num_patches, hw)]
    return ids.to(feat.device)


def gather_patches(feat: Tensor, ids: Tensor | None) -> Tensor:
    """[B, C, H, W] -> [B, S, C] at flat locations `ids` (all H*W locations if None)."""
    flat = feat.flatten(2)  # B, C, HW: indexing the last axis keeps the gradient in contiguous memory
    return (flat if ids is None else flat[:, :, ids]).transpose(1, 2)


class PatchProjector(nn.Module):
    """One projection head per tapped layer; `use_mlp=False` only normalises (CUT's option).

    `linear_factory(in, out)` lets ODCR swap in orthogonal Linear layers.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        nc: int = 256,
        use_mlp: bool = True,
        linear_factory: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        make = linear_factory or (lambda i, o: nn.Linear(i, o))
        self.use_mlp = use_mlp
        self.nc = nc if use_mlp else None
        self.heads = nn.ModuleList(
            [nn.Sequential(make(c, nc), nn.ReLU(), make(nc, nc)) if use_mlp else nn.Identity() for c in in_channels]
        )

    def forward(self, patches: Sequence[Tensor]) -> list[Tensor]:
        """patches[l]: [B, S, C_l] -> [B, S, nc] unit vectors."""
        if len(patches) != len(self.heads):
            raise ValueError(f"got {len(patches)} feature layers for {len(self.heads)} heads")
        return [l2_normalize(head(p)) for head, p in zip(self.heads, patches, strict=True)]


def patch_nce_loss(q: Tensor, k: Tensor, tau: float = 0.07) -> Tensor:
    """Per-patch InfoNCE, [B, S] losses.

    q: [B, S, D] output-patch embeddings (queries), k: [B, S, D] input-patch embeddings at the
    same locations. Positive for q[b, s] is k[b, s]; negatives are k[b, n], n != s, of the same
    image. k is detached (the reference's choice: the input side is a fixed target). Self-pairs
    are excluded exactly (-inf logit) where the reference used -10 before /tau (exp(-143) = 0).
    """
    if q.shape != k.shape or q.dim() != 3:
        raise ValueError(f"q and k must both be [B, S, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    k = k.detach()
    s = q.shape[1]
    l_pos = (q * k).sum(-1, keepdim=True)  # B, S, 1
    l_neg = torch.bmm(q, k.transpose(1, 2))  # B, S, S
    eye = torch.eye(s, dtype=torch.bool, device=q.device)
    l_neg = l_neg.masked_fill(eye, float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=-1) / tau
    return torch.logsumexp(logits, dim=-1) - logits[..., 0]


@LOSSES.register("patchnce")
class PatchNCE(nn.Module):
    """Multilayer PatchNCE between source features and features of the translated image.

    `forward(src_feats, tgt_feats)` -> scalar: mean over patches, averaged over layers (no
    lambda; the method weights it).
    """

    def __init__(
        self, in_channels: Sequence[int], num_patches: int = 256, nc: int = 256, tau: float = 0.07,
        use_mlp: bool = True, linear_factory: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.tau = tau
        self.projector = PatchProjector(in_channels, nc, use_mlp, linear_factory)

    def embed(self, feats: Sequence[Tensor], ids: Sequence[Tensor | None]) -> list[Tensor]:
        return self.projector([gather_patches(f, i) for f, i in zip(feats, ids, strict=True)])

    def sample(self, feats: Sequence[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
        return [sample_locations(f, self.num_patches, generator) for f in feats]

    def forward(
        self, src_feats: Sequence[Tensor], tgt_feats: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        ids = self.sample(src_feats, generator)
        k = self.embed(src_feats, ids)
        q = self.embed(tgt_feats, ids)
        losses = [patch_nce_loss(qi, ki, self.tau).mean() for qi, ki in zip(q, k, strict=True)]
        return torch.stack(losses).mean()
