"""AOD-Net (Li et al., ICCV 2017): our implementation of the public architecture, official weights.

The network predicts one map K(x) that folds transmission and airlight together, and restores
J = K * I - K + 1 (the paper's b = 1). Layer sizes and concatenation order follow the released
PyTorch re-implementation whose `dehazer.pth` we load (see ../shared/data/aodnet_weights/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge import hub
from taskbridge.registry import RESTORERS
from taskbridge.restorers.base import FrozenRestorer, load_prefixed, unwrap_state


@RESTORERS.register("aodnet")
class AODNet(FrozenRestorer):
    """AOD-Net dehazer (1,761 parameters, NYU2 synthetic-haze weights)."""

    def __init__(self, weights: str | None = "aodnet") -> None:
        super().__init__()
        self.e_conv1 = nn.Conv2d(3, 3, 1, 1, 0)
        self.e_conv2 = nn.Conv2d(3, 3, 3, 1, 1)
        self.e_conv3 = nn.Conv2d(6, 3, 5, 1, 2)
        self.e_conv4 = nn.Conv2d(6, 3, 7, 1, 3)
        self.e_conv5 = nn.Conv2d(12, 3, 3, 1, 1)
        if weights is not None:
            state = unwrap_state(hub.load_state(weights), f"AOD-Net weights '{weights}'")
            load_prefixed(self, state, f"AOD-Net weights '{weights}'")
        self.freeze()

    def margin(self, h: int, w: int) -> int:
        return 8  # receptive radius 0 + 1 + 2 + 3 + 1 (the 1x1, 3x3, 5x5, 7x7 and 3x3 convolutions), + 1

    def forward(self, images: Tensor) -> Tensor:
        self.check_input(images)
        x1 = F.relu(self.e_conv1(images))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(torch.cat((x1, x2), 1)))
        x4 = F.relu(self.e_conv4(torch.cat((x2, x3), 1)))
        k = F.relu(self.e_conv5(torch.cat((x1, x2, x3, x4), 1)))
        # The released model only applies ReLU; the contract says [0, 1], so we also cap at 1.
        return torch.clamp(k * images - k + 1.0, 0.0, 1.0)
