"""What every degradation shares: parameter sampling under a generator, and batch handling.

A degradation is an `nn.Module` with ``forward(clean, generator=None) -> (degraded, params)``:
`params` holds one value per image ([B] tensors) so a degraded set can be described, reproduced
(`apply(clean, params)`) or logged. All randomness comes from `generator` (a `torch.Generator`);
without one, torch's global RNG is used, which `torch.manual_seed` makes deterministic. The
image path is differentiable with respect to the clean image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

Range = float | tuple[float, float] | Sequence[float]


def check_range(name: str, spec: Range, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """A fixed value or a (lo, hi) range as (lo, hi); errors name the option."""
    if isinstance(spec, (int, float)):
        lo = hi = float(spec)
    else:
        vals = [float(v) for v in spec]
        if len(vals) != 2 or vals[0] > vals[1]:
            raise ValueError(f"{name} must be a number or a (low, high) pair with low <= high, got {spec!r}")
        lo, hi = vals
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{name}={spec!r} is outside the allowed range [{low}, {high}]")
    return lo, hi


def sample_uniform(bounds: tuple[float, float], n: int, generator: torch.Generator | None) -> Tensor:
    """[n] float32 values uniform in bounds (exactly lo when lo == hi), drawn on the CPU."""
    lo, hi = bounds
    if lo == hi:
        return torch.full((n,), lo)
    return lo + (hi - lo) * draw(n, generator)


def draw(n: int, generator: torch.Generator | None) -> Tensor:
    """[n] float32 uniform in [0, 1) on the CPU, from `generator` (on any device) or the global RNG."""
    if generator is None:
        return torch.rand(n)
    return torch.rand(n, generator=generator, device=generator.device).cpu()


def draw_choice(options: Sequence[float], n: int, generator: torch.Generator | None) -> Tensor:
    """[n] values picked uniformly from `options`."""
    opts = torch.as_tensor(list(options), dtype=torch.float32)
    idx = (draw(n, generator) * len(opts)).long().clamp_max(len(opts) - 1)
    return opts[idx]


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` whatever device it lives on."""
    if generator is None:
        return torch.randn_like(x)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)


def per_image(value: float | Tensor, x: Tensor) -> Tensor:
    """A scalar or [B] (or [B, C]) parameter broadcastable against NCHW `x`."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"parameter has {t.shape[0]} values for a batch of {x.shape[0]} images")
    return t.reshape(t.shape[0], -1, 1, 1)


class Degradation(nn.Module):
    """clean NCHW (or CHW) in [0, 1] -> (degraded, {name: [B] tensor of the values used})."""

    def sample_params(
        self, batch: int, size: tuple[int, int], generator: torch.Generator | None
    ) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, clean: Tensor, params: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, clean: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if clean.ndim not in (3, 4) or clean.shape[-3] != 3:
            raise ValueError(f"{type(self).__name__} expects RGB CHW or NCHW images, got shape {tuple(clean.shape)}")
        x = clean if clean.ndim == 4 else clean.unsqueeze(0)
        params = self.sample_params(x.shape[0], (int(x.shape[-2]), int(x.shape[-1])), generator)
        out = self.apply(x, params, generator)
        return (out if clean.ndim == 4 else out.squeeze(0)), params


def run_degradation(degrade: Callable[[Tensor], object], images: Tensor, seed: int | None) -> Tensor:
    """Apply a degradation to a batch under `seed` without touching the global RNG stream.

    Accepts modules returning a tensor, an `(images, params)` tuple, a dict with `image(s)`, or an
    object with an `.image(s)` attribute, so any degradation family member (or a plain function)
    can be used by evaluation and training data alike.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        out = degrade(images)
    if isinstance(out, tuple):
        out = out[0]
    elif isinstance(out, dict):
        out = out.get("image", out.get("images"))
    elif not isinstance(out, Tensor):
        out = getattr(out, "image", getattr(out, "images", out))
    if not isinstance(out, Tensor):
        raise TypeError(f"degradation returned {type(out).__name__}; expected a tensor")
    return out.clamp(0, 1)
