"""PatchNCE (CUT Eq. 3): direct per-patch computation, gradients, eager heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from taskbridge.losses.patchnce import PatchNCE, gather_patches, l2_normalize, patch_nce_loss


def direct_eq3(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """-log[exp(v.v+/t) / (exp(v.v+/t) + sum_n exp(v.v-_n/t))], negatives = other patches of the same image."""
    b, s, _ = q.shape
    out = torch.empty(b, s, dtype=q.dtype)
    for i in range(b):
        for j in range(s):
            pos = math.exp(float(q[i, j] @ k[i, j]) / tau)
            neg = sum(math.exp(float(q[i, j] @ k[i, n]) / tau) for n in range(s) if n != j)
            out[i, j] = -math.log(pos / (pos + neg))
    return out


def test_patch_nce_equals_eq3_directly() -> None:
    q = l2_normalize(torch.randn(2, 5, 4, dtype=torch.float64))
    k = l2_normalize(torch.randn(2, 5, 4, dtype=torch.float64))
    torch.testing.assert_close(patch_nce_loss(q, k, 0.07), direct_eq3(q, k, 0.07))
    # negatives come from the same image only: changing image 1 leaves image 0's losses alone
    k2 = k.clone()
    k2[1] = l2_normalize(torch.randn(5, 4, dtype=torch.float64))
    torch.testing.assert_close(patch_nce_loss(q, k2, 0.07)[0], patch_nce_loss(q, k, 0.07)[0])


def test_patch_nce_gradcheck() -> None:
    q = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    k = l2_normalize(torch.randn(2, 4, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda t: patch_nce_loss(l2_normalize(t), k, 0.5), (q,))
    # the input (key) side is a fixed target: no gradient reaches it
    kk = k.clone().requires_grad_(True)
    patch_nce_loss(l2_normalize(q), kk, 0.07).sum().backward()
    assert kk.grad is None


def test_multilayer_module_equals_direct_eq3() -> None:
    """Without heads and with every location sampled, the module is the mean over layers of the
    mean of Eq. 3 over all patches (sampling order cannot matter)."""
    torch.manual_seed(1)
    src = [torch.randn(2, 3, 3, 3, dtype=torch.float64), torch.randn(2, 5, 2, 2, dtype=torch.float64)]
    tgt = [torch.randn_like(f) for f in src]
    nce = PatchNCE([3, 5], num_patches=64, tau=0.07, use_mlp=False)
    got = nce(src, tgt)
    want = torch.stack(
        [
            direct_eq3(l2_normalize(gather_patches(t, None)), l2_normalize(gather_patches(s, None)), 0.07).mean()
            for s, t in zip(src, tgt, strict=True)
        ]
    ).mean()
    torch.testing.assert_close(got, want)


def test_sampled_ids_are_shared_between_source_and_output() -> None:
    """If the output features equal the input's, every query meets its own key as positive."""
    torch.manual_seed(0)
    feats = [F.normalize(torch.randn(1, 8, 8, 8), dim=1)]
    nce = PatchNCE([8], num_patches=16, tau=0.07, use_mlp=False)
    same = nce(feats, feats)
    other = nce(feats, [feats[0].roll(1, dims=-1)])
    assert same < other


def test_heads_exist_before_any_forward() -> None:
    nce = PatchNCE([3, 16, 32], num_patches=8, nc=16)
    shapes = [tuple(p.shape) for p in nce.parameters()]
    assert shapes[:4] == [(16, 3), (16,), (16, 16), (16,)] and len(shapes) == 12
    before = [id(p) for p in nce.parameters()]
    nce([torch.randn(1, 3, 4, 4), torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)],
        [torch.randn(1, 3, 4, 4), torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)])
    assert [id(p) for p in nce.parameters()] == before
