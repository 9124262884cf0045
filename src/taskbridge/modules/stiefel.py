"""Keeping projection matrices on the Stiefel manifold (ODCR Eqs. 2-6, REFERENCE 2.3).

Two ways, chosen by ODCR's `stiefel_optimizer`:
* `orthogonal` (default): `torch.nn.utils.parametrizations.orthogonal`; the optimizer runs on a
  free parameter and the weight is orthonormal by construction.
* `riemannian`: the weight itself is the parameter; around every optimizer step that updates
  it, the gradient is replaced by the Riemannian gradient (Eq. 3) and the step Xi is retracted
  (Eqs. 4-6). Plain SGD then performs exactly Eqs. 3-6; other optimizers (Adam) move along their
  own direction projected onto the tangent space, then retract, so the constraint still holds.

A Linear weight W [out, in] is seen as Theta = W (out >= in) or W^T (out < in), so that Theta has
orthonormal columns: Theta^T Theta = I.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook


def as_tall(w: Tensor) -> tuple[Tensor, bool]:
    """Theta with at least as many rows as columns, and whether it is W transposed."""
    return (w, False) if w.shape[0] >= w.shape[1] else (w.transpose(0, 1), True)


def stiefel_error(w: Tensor) -> float:
    """||Theta^T Theta - I||_F for the tall view of a matrix."""
    theta, _ = as_tall(w.detach())
    gram = theta.transpose(0, 1) @ theta
    return float((gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).norm())


def riemannian_grad(theta: Tensor, egrad: Tensor) -> Tensor:
    """Eq. 3: grad f = G - 1/2 Theta Theta^T G - 1/2 Theta G^T Theta (projects onto the tangent space)."""
    return egrad - 0.5 * theta @ (theta.transpose(0, 1) @ egrad) - 0.5 * theta @ (egrad.transpose(0, 1) @ theta)


def _inv_sqrt_spd(m: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(m)
    return (evecs * evals.clamp_min(1e-12).rsqrt()) @ evecs.transpose(0, 1)


def retract(theta: Tensor, xi: Tensor) -> Tensor:
    """Eqs. 5-6: (Theta + Xi)(I + Xi^T Xi)^(-1/2); orthonormal when Theta is and Theta^T Xi is skew."""
    eye = torch.eye(xi.shape[1], dtype=xi.dtype, device=xi.device)
    return (theta + xi) @ _inv_sqrt_spd(eye + xi.transpose(0, 1) @ xi)


def polar_retract(theta: Tensor, xi: Tensor) -> Tensor:
    """(Theta + Xi) ((Theta + Xi)^T (Theta + Xi))^(-1/2): equal to Eq. 5 on the manifold (there
    (Theta+Xi)^T(Theta+Xi) = I + Xi^T Xi), and it also removes accumulated round-off."""
    y = theta + xi
    return y @ _inv_sqrt_spd(y.transpose(0, 1) @ y)


class StiefelConstraint:
    """Riemannian gradient + retraction for a set of matrix parameters, around optimizer steps.

    `attach(optimizer)` hooks one optimizer; `attach_all()` hooks every optimizer that holds one
    of the parameters (global optimizer hooks, filtered by membership, removed when this object
    is garbage-collected), so it works with whatever engine builds the optimizers.
    """

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self.params = list(params)
        for p in self.params:
            if p.dim() != 2:
                raise ValueError(f"Stiefel parameters must be matrices, got shape {tuple(p.shape)}")
        self._ids = {id(p) for p in self.params}
        self._old: dict[int, Tensor] = {}
        self._handles: list = []

    @torch.no_grad()
    def orthonormalize_(self) -> None:
        """Project every parameter onto the manifold (initialisation)."""
        for p in self.params:
            theta, t = as_tall(p.double())
            q = polar_retract(theta, torch.zeros_like(theta))
            p.copy_((q.transpose(0, 1) if t else q).to(p.dtype))

    def _mine(self, optimizer: Optimizer) -> list[nn.Parameter]:
        return [p for g in optimizer.param_groups for p in g["params"] if id(p) in self._ids]

    @torch.no_grad()
    def before_step(self, optimizer: Optimizer) -> None:
        for p in self._mine(optimizer):
            self._old[id(p)] = p.detach().clone()
            if p.grad is not None:
                theta, t = as_tall(p.double())
                g = p.grad.double()
                g = g.transpose(0, 1) if t else g
                rg = riemannian_grad(theta, g)
                p.grad.copy_((rg.transpose(0, 1) if t else rg).to(p.grad.dtype))

    @torch.no_grad()
    def after_step(self, optimizer: Optimizer) -> None:
        for p in self._mine(optimizer):
            old = self._old.pop(id(p), None)
            if old is None:
                continue
            theta, t = as_tall(old.double())
            step = p.double() - old.double()
            step = step.transpose(0, 1) if t else step
            xi = riemannian_grad(theta, step)  # tangent part of the optimizer's step (Eq. 4)
            new = polar_retract(theta, xi)
            p.copy_((new.transpose(0, 1) if t else new).to(p.dtype))

    def attach(self, optimizer: Optimizer) -> None:
        self._handles.append(optimizer.register_step_pre_hook(lambda o, a, k: self.before_step(o)))
        self._handles.append(optimizer.register_step_post_hook(lambda o, a, k: self.after_step(o)))

    def attach_all(self) -> None:
        ref = weakref.ref(self)

        def pre(opt: Optimizer, args, kwargs) -> None:
            me = ref()
            if me is not None:
                me.before_step(opt)

        def post(opt: Optimizer, args, kwargs) -> None:
            me = ref()
            if me is not None:
                me.after_step(opt)

        handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
        self._handles.extend(handles)
        weakref.finalize(self, lambda hs=tuple(handles): [h.remove() for h in hs])

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getstate__(self) -> dict:
        """Pickled/deep-copied copies (EMA, checkpoints) are not attached to any optimizer."""
        state = self.__dict__.copy()
        state["_handles"] = []
        state["_old"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._ids = {id(p) for p in self.params}
