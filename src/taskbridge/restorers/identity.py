"""The do-nothing restorer: the baseline every restorer and translator is compared against."""

from __future__ import annotations

from torch import Tensor

from taskbridge.registry import RESTORERS
from taskbridge.restorers.base import FrozenRestorer


@RESTORERS.register("identity")
class Identity(FrozenRestorer):
    """Returns the degraded image unchanged (no restoration baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze()

    def margin(self, h: int, w: int) -> int:
        return 0

    def forward(self, images: Tensor) -> Tensor:
        self.check_input(images)
        return images
