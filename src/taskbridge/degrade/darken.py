"""Synthetic low light: ``y = gain * x ** gamma`` plus optional Poisson-Gaussian sensor noise.

VaT (following AD-YOLO [47]) darkens VOC with ``gamma`` in [1.5, 5]; the CIFAR-10 reference
darkening of this project is ``0.5 * x ** 2.2`` (``gamma=2.2, gain=0.5``). Sensor noise is the
usual heteroscedastic model ``y + sqrt(shot * y + read^2) * n``, ``n ~ N(0, 1)``: the Gaussian
approximation of Poisson shot noise (variance proportional to the signal) plus Gaussian read
noise. Using the approximation keeps the whole map differentiable w.r.t. the clean image.
Inputs are clamped to [1e-6, 1] before the power so the gradient stays finite for gamma < 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from taskbridge.degrade.base import Degradation, Range, check_range, per_image, randn_like, sample_uniform
from taskbridge.registry import DEGRADATIONS

_EPS = 1e-6


def lowlight(
    clean: Tensor,
    gamma: float | Tensor,
    gain: float | Tensor = 1.0,
    shot_noise: float | Tensor = 0.0,
    read_noise: float | Tensor = 0.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Darken NCHW (or CHW) `clean`: ``gain * x ** gamma`` (+ noise), parameters scalar or [B].

    `clip` clamps the result to [0, 1] (only needed with noise or gain > 1).
    """
    x = clean if clean.ndim == 4 else clean.unsqueeze(0)
    y = per_image(gain, x) * x.clamp(_EPS, 1.0) ** per_image(gamma, x)
    shot = torch.as_tensor(shot_noise)
    read = torch.as_tensor(read_noise)
    if bool((shot > 0).any()) or bool((read > 0).any()):
        var = per_image(shot_noise, x) * y.clamp_min(0) + per_image(read_noise, x) ** 2
        y = y + torch.sqrt(var + 1e-12) * randn_like(y, generator)
    if clip:
        y = y.clamp(0.0, 1.0)
    return y if clean.ndim == 4 else y.squeeze(0)


@DEGRADATIONS.register("lowlight")
class LowLight(Degradation):
    """Synthetic low light: gamma in [1.5, 5] (VaT), optional gain and Poisson-Gaussian noise.

    Each option is a number or a (low, high) range sampled uniformly per image; e.g. the CIFAR
    reference darkening is ``LowLight(gamma=2.2, gain=0.5)``.
    """

    def __init__(
        self,
        gamma: Range = (1.5, 5.0),
        gain: Range = 1.0,
        shot_noise: Range = 0.0,
        read_noise: Range = 0.0,
        clip: bool = True,
    ) -> None:
        super().__init__()
        self.gamma = check_range("gamma", gamma, 0.0)
        self.gain = check_range("gain", gain, 0.0)
        self.shot_noise = check_range("shot_noise", shot_noise, 0.0)
        self.read_noise = check_range("read_noise", read_noise, 0.0)
        if self.gamma[0] <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.clip = clip

    def sample_params(self, batch: int, size: tuple[int, int], generator: torch.Generator | None) -> dict[str, Tensor]:
        return {
            "gamma": sample_uniform(self.gamma, batch, generator),
            "gain": sample_uniform(self.gain, batch, generator),
            "shot_noise": sample_uniform(self.shot_noise, batch, generator),
            "read_noise": sample_uniform(self.read_noise, batch, generator),
        }

    def apply(self, clean: Tensor, params: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        return lowlight(
            clean, params["gamma"], params["gain"], params["shot_noise"], params["read_noise"], generator, self.clip
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, gain={self.gain}, shot_noise={self.shot_noise}, read_noise={self.read_noise}"
