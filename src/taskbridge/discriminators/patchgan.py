"""70x70 PatchGAN discriminator (CycleGAN `basic`, REFERENCE 2.1/4), optionally anti-aliased (CUT).

Registered as discriminator `patchgan`; 2.765 M parameters at ndf 64, 3 layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from taskbridge.bounds import PositiveFloat, PositiveInt
from taskbridge.modules.layers import BlurPool2d, init_weights, make_norm
from taskbridge.registry import DISCRIMINATORS


@DISCRIMINATORS.register("patchgan")
class PatchGAN(nn.Module):
    """70x70 PatchGAN: 4x4 convs ndf-2ndf-4ndf-8ndf-1, LeakyReLU 0.2, no norm on the first layer.

    With `antialias` each stride-2 conv becomes stride 1 followed by a blur-pool (CUT).
    Outputs raw scores (no sigmoid): LSGAN and BCE-with-logits both take them.
    """

    def __init__(
        self,
        in_channels: PositiveInt = 3,
        ndf: PositiveInt = 64,
        n_layers: PositiveInt = 3,
        norm: str = "instance",
        antialias: bool = False,
        init: str = "normal",
        init_gain: PositiveFloat = 0.02,
    ) -> None:
        super().__init__()
        bias = norm != "batch"

        def down(cin: int, cout: int, use_norm: bool) -> list[nn.Module]:
            stride = 1 if antialias else 2
            mods: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride, 1, bias=bias or not use_norm)]
            if use_norm:
                mods.append(make_norm(norm, cout))
            mods.append(nn.LeakyReLU(0.2, True))
            if antialias:
                mods.append(BlurPool2d(cout))
            return mods

        layers: list[nn.Module] = down(in_channels, ndf, use_norm=False)
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += down(ndf * prev, ndf * mult, use_norm=True)
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias),
            make_norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.model = nn.Sequential(*layers)
        init_weights(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
