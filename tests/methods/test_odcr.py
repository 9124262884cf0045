"""ODCR: WPNCE (Eqs. 11-14), DWFC (Eqs. 8-10), Stiefel constraint (Eqs. 2-6) in both modes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from support.gan import TINY, build_optimizers, load_batch
from taskbridge.losses.patchnce import l2_normalize
from taskbridge.methods.odcr import DWFC, ODCR, wpnce_loss
from taskbridge.modules.stiefel import (
    StiefelConstraint,
    polar_retract,
    retract,
    riemannian_grad,
    stiefel_error,
)


def test_wpnce_hand_case() -> None:
    """B=1, S=2 query patches, N=1 clear patch, D=2, tau=1: Eqs. 11-14 written out."""
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k_h = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]])
    k_c = torch.tensor([[[0.0, 1.0]]])
    w_h = torch.tensor([[[0.7, 0.3], [0.2, 0.8]]])
    w_c = torch.tensor([[[0.4, 0.6], [0.9, 0.1]]])
    got = wpnce_loss(q, k_h, k_c, w_h, w_c, tau=1.0)

    def ell(w, z, z2):  # Eq. 11
        return math.exp(sum(wi * a * b for wi, a, b in zip(w, z2, z, strict=True)))

    one = [1.0, 1.0]
    # query 0: z = (1,0); z+- = (.6,.8); z-- = (1,0); z-+ = (0,1)
    p0 = ell([0.7, 0.3], [1, 0], [0.6, 0.8]) + ell([0.4, 0.6], [1, 0], [0, 1])
    n0 = ell([0.3, 0.7], [1, 0], [0.6, 0.8]) + ell(one, [1, 0], [1, 0]) + ell([0.6, 0.4], [1, 0], [0, 1])
    # query 1: z = (0,1); z+- = (1,0); z-- = (.6,.8); z-+ = (0,1)
    p1 = ell([0.2, 0.8], [0, 1], [1, 0]) + ell([0.9, 0.1], [0, 1], [0, 1])
    n1 = ell([0.8, 0.2], [0, 1], [1, 0]) + ell(one, [0, 1], [0.6, 0.8]) + ell([0.1, 0.9], [0, 1], [0, 1])
    want = torch.tensor([[-math.log(p0 / (p0 + n0)), -math.log(p1 / (p1 + n1))]])
    torch.testing.assert_close(got, want)


def test_wpnce_gradcheck_and_flags() -> None:
    g = torch.Generator().manual_seed(0)

    def rnd(*s):
        return torch.randn(*s, dtype=torch.float64, generator=g)

    q, k_h, k_c = l2_normalize(rnd(2, 3, 4)), l2_normalize(rnd(2, 3, 4)), l2_normalize(rnd(2, 5, 4))
    w_h, w_c = torch.softmax(rnd(2, 3, 4), -1), torch.softmax(rnd(2, 3, 4), -1)
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, k_h, k_c, w_h, w_c))
    assert torch.autograd.gradcheck(lambda *a: wpnce_loss(*a, tau=0.5), inputs)
    assert torch.autograd.gradcheck(lambda *a: wpnce_loss(*a, tau=0.5, swap_weights=True, weight_scale=4.0), inputs)
    # swap_weights exchanges w_h and 1 - w_h around the co-located hazy patch (weight_scale 1)
    torch.testing.assert_close(
        wpnce_loss(q, k_h, k_c, w_h, w_c, swap_weights=True), wpnce_loss(q, k_h, k_c, 1 - w_h, w_c)
    )
    with pytest.raises(ValueError, match="k_c"):
        wpnce_loss(q, k_h, k_c[:, :, :3], w_h, w_c)


def test_dwfc_eq8_and_weights_by_hand() -> None:
    c = DWFC(2)
    with torch.no_grad():
        c.theta.copy_(torch.tensor([[2.0, -1.0], [0.5, 0.5]]))
    x = torch.tensor([[1.0, 1.0]])
    # theta_h^T x = 1, theta_c^T x = 1: hazy label (1, 0) -> -log s(1) - log(1 - s(1))
    s = 1 / (1 + math.exp(-1.0))
    assert c.ce(x, hazy=True).item() == pytest.approx(-math.log(s) - math.log(1 - s))
    w_h, w_c = c.weights(torch.tensor([[1.0, -3.0]]))
    torch.testing.assert_close(w_h, torch.softmax(torch.tensor([[2.0, 3.0]]), -1))
    torch.testing.assert_close(w_c, torch.softmax(torch.tensor([[0.5, 1.5]]), -1))
    xx = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    c64 = DWFC(2).double()

    def f(t: torch.Tensor) -> torch.Tensor:
        w_h, w_c = c64.weights(t)
        return c64.ce(t, hazy=False) + w_h[:, 0].sum() + w_c[:, 1].sum()

    assert torch.autograd.gradcheck(f, (xx,))


def test_riemannian_sgd_step_is_eqs_3_to_6() -> None:
    torch.manual_seed(0)
    theta0 = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))[0]
    p = torch.nn.Parameter(theta0.clone())
    c = torch.randn(6, 3, dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=0.3)
    StiefelConstraint([p]).attach(opt)
    (p * c).sum().backward()  # Euclidean gradient = c
    opt.step()
    xi = -0.3 * riemannian_grad(theta0, c)  # Eqs. 3-4 (tangent step)
    torch.testing.assert_close(theta0.T @ xi, -(theta0.T @ xi).T)  # skew: Eq. 6 holds exactly
    torch.testing.assert_close(p.detach(), retract(theta0, xi))  # Eq. 5
    torch.testing.assert_close(retract(theta0, xi), polar_retract(theta0, xi))
    assert stiefel_error(p) < 1e-12


def _odcr_steps(mode: str, batch, steps: int = 4) -> ODCR:
    m = ODCR(**TINY["odcr"], stiefel_optimizer=mode)
    optims = build_optimizers(m)
    for opt in optims.values():  # a large lr so that an unconstrained update would visibly leave the manifold
        for g in opt.param_groups:
            g["lr"] = 1e-2
    for step in range(steps):
        out = m.training_step(batch, step)
        for group in ("G", "D"):
            optims[group].zero_grad(set_to_none=True)
            out[f"loss/{group}"].backward()
            optims[group].step()
    return m


@pytest.mark.parametrize("mode", ["orthogonal", "riemannian"])
def test_heads_stay_orthonormal_under_adam(mode: str, shared_data: Path) -> None:
    batch = load_batch(shared_data)
    m = ODCR(**TINY["odcr"], stiefel_optimizer=mode)
    before = [w.detach().clone() for w in m.stiefel_matrices()]
    assert all(stiefel_error(w) < 1e-5 for w in before)
    m = _odcr_steps(mode, batch)
    mats = m.stiefel_matrices()
    assert len(mats) == 2 * len(TINY["odcr"]["nce_layers"])
    errors = [stiefel_error(w) for w in mats]
    assert max(errors) < 1e-5, errors


def test_unconstrained_adam_would_leave_the_manifold() -> None:
    """Guards the test above against passing trivially: the same kind of update without the
    constraint breaks Theta^T Theta = I."""
    w = torch.nn.Parameter(torch.linalg.qr(torch.randn(16, 8))[0])
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(4):
        opt.zero_grad()
        (w.sum() ** 2).backward()
        opt.step()
    assert stiefel_error(w) > 1e-3


def test_total_loss_is_eq15(shared_data: Path) -> None:
    batch = load_batch(shared_data)
    for idt in ("nce", "l1", "none"):
        m = ODCR(**TINY["odcr"], idt=idt, lambda_ce=0.5, lambda_idt=2.0, weight_scale="D", swap_weights=True)
        assert m.weight_scale == 16.0
        out = m.training_step(batch, 0)
        want = out["G/gan"] + out["G/wpnce"] + 0.5 * out["G/ce"] + 2.0 * out["G/idt"]
        torch.testing.assert_close(out["loss/G"].detach(), want)
        assert (out["G/idt"] == 0) == (idt == "none")


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="stiefel_optimizer"):
        ODCR(**TINY["odcr"], stiefel_optimizer="adam")
    with pytest.raises(ValueError, match="idt"):
        ODCR(**TINY["odcr"], idt="cycle")
