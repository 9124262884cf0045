"""ResNet generator of CycleGAN (REFERENCE 4) and its anti-aliased CUT variant (REFERENCE 2.1).

Layers live in one flat `nn.Sequential` whose children have *names*, so PatchNCE taps are chosen
by name (`pad_in`, `down1_conv`, `down2_conv`, `block1`, ..., `block<n>`) instead of by the
Sequential index, which in the reference points at different layers with and without
anti-aliasing. `tap_channels` gives the channel count of every tap at construction time, so
projection heads can be built eagerly.

The network works in [-1, 1] (Tanh output), like the references; methods convert at their
boundary (`value_range` says so).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from taskbridge.bounds import NonNegativeInt, PositiveFloat, PositiveInt
from taskbridge.modules.layers import BlurPool2d, BlurUpsample2d, init_weights, make_norm
from taskbridge.registry import TRANSLATORS

#: the CUT default taps (reference ids 0, 4, 8, 12, 16 with anti-aliasing)
CUT_TAPS: tuple[str, ...] = ("pad_in", "down1_conv", "down2_conv", "block1", "block5")


class ResnetBlock(nn.Module):
    """x + [ReflPad1-Conv3x3-Norm-ReLU-ReflPad1-Conv3x3-Norm](x)."""

    def __init__(self, channels: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, 2 downsamplings, n_blocks residual blocks, 2 upsamplings, c7s1-3, Tanh.

    `antialias=False` is CycleGAN (stride-2 conv down, transposed conv up); `antialias=True` is
    CUT (stride-1 conv + blur-pool down, blur-upsample + conv up). Same parameter count
    (11.378 M at ngf 64, 9 blocks).
    """

    value_range: tuple[float, float] = (-1.0, 1.0)
    size_multiple = 4  # two stride-2 stages
    min_size = 16  # the residual blocks' reflection padding and instance norm need more than 1 pixel at 1/4

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        antialias: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        bias = norm != "batch"  # a non-affine InstanceNorm needs the conv bias (references do this)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        ch: dict[str, int] = {}

        def add(name: str, module: nn.Module, channels: int) -> None:
            layers[name] = module
            ch[name] = channels

        add("pad_in", nn.ReflectionPad2d(3), in_channels)
        add("conv_in", nn.Conv2d(in_channels, ngf, 7, bias=bias), ngf)
        add("norm_in", make_norm(norm, ngf), ngf)
        add("relu_in", nn.ReLU(True), ngf)
        c = ngf
        for i in (1, 2):
            if antialias:
                add(f"down{i}_conv", nn.Conv2d(c, 2 * c, 3, stride=1, padding=1, bias=bias), 2 * c)
            else:
                add(f"down{i}_conv", nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), 2 * c)
            c *= 2
            add(f"down{i}_norm", make_norm(norm, c), c)
            add(f"down{i}_relu", nn.ReLU(True), c)
            if antialias:
                add(f"down{i}_blur", BlurPool2d(c), c)
        for i in range(1, n_blocks + 1):
            add(f"block{i}", ResnetBlock(c, norm, bias), c)
        for i in (1, 2):
            if antialias:
                add(f"up{i}_blur", BlurUpsample2d(), c)
                add(f"up{i}_conv", nn.Conv2d(c, c // 2, 3, stride=1, padding=1, bias=bias), c // 2)
            else:
                add(
                    f"up{i}_conv",
                    nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                    c // 2,
                )
            c //= 2
            add(f"up{i}_norm", make_norm(norm, c), c)
            add(f"up{i}_relu", nn.ReLU(True), c)
        add("pad_out", nn.ReflectionPad2d(3), c)
        add("conv_out", nn.Conv2d(c, out_channels, 7), out_channels)
        add("tanh", nn.Tanh(), out_channels)
        self.layers = nn.Sequential(layers)
        self.tap_channels: dict[str, int] = ch
        self.n_blocks = n_blocks
        init_weights(self, init, init_gain)

    @property
    def tap_names(self) -> list[str]:
        return list(self.tap_channels)

    def check_taps(self, taps: Sequence[str]) -> None:
        unknown = [t for t in taps if t not in self.tap_channels]
        if unknown:
            raise ValueError(
                f"unknown generator tap(s) {', '.join(unknown)}; available: {', '.join(self.tap_names)}"
            )

    @staticmethod
    def _check_input(x: Tensor) -> None:
        if x.dim() != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(
                f"ResnetGenerator expects NCHW with H and W divisible by 4, got {tuple(x.shape)}; "
                "crop or resize the images (e.g. data.size a multiple of 4)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.layers(x)

    def forward_with_taps(self, x: Tensor, taps: Sequence[str]) -> tuple[Tensor, list[Tensor]]:
        """Output and the named intermediate features (in `taps` order) from one pass."""
        self._check_input(x)
        self.check_taps(taps)
        found: dict[str, Tensor] = {}
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in taps:
                found[name] = x
        return x, [found[t] for t in taps]

    def encode(self, x: Tensor, taps: Sequence[str]) -> list[Tensor]:
        """Only the features at `taps`, stopping after the deepest one (CUT's encode_only)."""
        self._check_input(x)
        self.check_taps(taps)
        wanted = set(taps)
        found: dict[str, Tensor] = {}
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    break
        return [found[t] for t in taps]


@TRANSLATORS.register("resnet-generator")
def resnet_generator(
    n_blocks: NonNegativeInt = 9,
    ngf: PositiveInt = 64,
    antialias: bool = False,
    norm: str = "instance",
    init: str = "normal",
    init_gain: PositiveFloat = 0.02,
) -> ResnetGenerator:
    """CycleGAN/CUT ResNet generator (works in [-1, 1]); antialias=True is CUT's variant."""
    return ResnetGenerator(
        ngf=ngf, n_blocks=n_blocks, norm=norm, antialias=antialias, init=init, init_gain=init_gain
    )
