"""What methods may ask of a translator network beyond `forward`.

* `value_range`: the range its images live in ((-1, 1) for the Tanh generators of CycleGAN/CUT,
  (0, 1) for VaT); a method maps its [0, 1] batches there and back (`methods.common`).
* `FeatureTaps`: named intermediate features (CUT/ODCR's PatchNCE reads them); a generator without
  taps cannot serve those methods, and they say so when built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


def value_range(net: nn.Module) -> tuple[float, float]:
    """The network's declared image range; [0, 1] when it declares none."""
    lo, hi = getattr(net, "value_range", (0.0, 1.0))
    return float(lo), float(hi)


@runtime_checkable
class FeatureTaps(Protocol):
    """A generator whose intermediate features can be read by name."""

    tap_channels: dict[str, int]

    def check_taps(self, taps: Sequence[str]) -> None: ...

    def forward_with_taps(self, x: Tensor, taps: Sequence[str]) -> tuple[Tensor, list[Tensor]]: ...

    def encode(self, x: Tensor, taps: Sequence[str]) -> list[Tensor]: ...
