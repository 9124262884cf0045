"""VGG feature networks for content/style losses: VGG-19 (ImageNet, torchvision weights) and VGG-16
with shift-tolerant (anti-aliased) pooling from the `stlpips-pytorch` wheel.

The architecture is built here (plain VGG layer lists); only weights are read, as plain tensors.
VGG-19 is what AdaIN and Hierarchy Flow use; its torchvision weights are a 548 MB download the user
makes once (`vgg19-imagenet` in the hub). The shift-tolerant VGG-16 of ST-LPIPS (Ghildyal & Liu 2022,
BSD-2) ships inside its 69 MB wheel, so it works offline; it is not the paper's network (16 layers,
max-pool with stride 1 + 3x3 blur-pool with stride 2), and results computed with it say so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from taskbridge.hub import WeightsNotFoundError, load_state, sha256_of
from taskbridge.registry import FEATURES

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STLPIPS_SHA256 = "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250"


class BlurPool(nn.Module):
    """3x3 binomial blur with stride 2 after reflection padding (anti-aliased downsampling).

    `pad=2` is the wheel's own `Downsample(pad_more=True)`, which ST-LPIPS uses: one more row and
    column out (33x33 instead of 32x32 from 64x64), sampled on a grid shifted by one pixel."""

    def __init__(self, channels: int, pad: int = 1) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).clone())
        self.pad = nn.ReflectionPad2d(pad)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


def vgg_layers(cfg: Sequence[int | str], last: str, antialias: bool = False,
               blur_pad: int = 1) -> tuple[nn.Sequential, dict[str, int]]:
    """VGG conv/ReLU/pool layers up to ReLU `last` (e.g. 'relu4_1'), and each ReLU's name -> layer index."""
    layers: list[nn.Module] = []
    taps: dict[str, int] = {}
    channels, stage, conv = 3, 1, 0
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(2, 1), BlurPool(channels, blur_pad)] if antialias else [nn.MaxPool2d(2, 2)]
            stage, conv = stage + 1, 0
            continue
        conv += 1
        layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
        channels = int(v)
        taps[f"relu{stage}_{conv}"] = len(layers) - 1
        if taps.get(last) is not None:
            return nn.Sequential(*layers), taps
    raise ValueError(f"no layer '{last}' in this VGG; known: {', '.join(taps)}")


class FeatureNet(nn.Module):
    """A frozen feature network: input normalisation + layers, returning the named ReLU outputs."""

    def __init__(self, layers: nn.Sequential, taps: Mapping[str, int], mean: Sequence[float] | Tensor,
                 std: Sequence[float] | Tensor, name: str) -> None:
        super().__init__()
        self.layers, self.taps, self.name = layers, dict(taps), name
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNet:  # always frozen (no dropout/BN here anyway)
        return super().train(False)

    def check_layers(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.taps]
        if unknown:
            raise ValueError(f"feature network {self.name}: no layer {unknown}; known: {', '.join(self.taps)}")

    def forward(self, images: Tensor, names: Sequence[str]) -> list[Tensor]:
        self.check_layers(names)
        wanted = {self.taps[n]: n for n in names}
        out: dict[str, Tensor] = {}
        x = (images - self.mean) / self.std
        for i, layer in enumerate(self.layers):
            x = layer(x)  # in-place activations only ever touch the newest tensor, never a stored tap
            if i in wanted:
                out[wanted[i]] = x
                if len(out) == len(wanted):
                    break
        return [out[n] for n in names]


def _load_layers(net: FeatureNet, state: Mapping[str, Tensor], prefix_of: dict[str, str], where: str) -> None:
    """Copy `state` (keys '<source prefix><index>.<param>') into net.layers, strictly for what the net has."""
    own = net.layers.state_dict()
    mapped = {}
    for key, value in state.items():
        for src, dst in prefix_of.items():
            if key.startswith(src):
                rest = key[len(src):]
                if f"{dst}{rest}" in own:
                    mapped[f"{dst}{rest}"] = value
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise ValueError(f"{where}: weights lack {missing[:4]} for this network")
    net.layers.load_state_dict(mapped, strict=True)


@FEATURES.register("vgg19")
def vgg19(weights: str = "vgg19-imagenet", last: str = "relu4_1") -> FeatureNet:
    """VGG-19 (ImageNet, torchvision weights) up to `last`: the feature network of AdaIN and Hierarchy Flow."""
    layers, taps = vgg_layers(VGG19, last)
    net = FeatureNet(layers, taps, IMAGENET_MEAN, IMAGENET_STD, "vgg19")
    state = load_state(weights)
    _load_layers(net, state, {"features.": ""}, f"features vgg19 ({weights})")
    return net


def stlpips_weights_path() -> Path:
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            "feature network vgg16-shift-tolerant needs the stlpips-pytorch wheel (its weights ship inside): "
            "pip install 'stlpips-pytorch==0.0.2' (or taskbridge's [features] extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"


@FEATURES.register("vgg16-shift-tolerant")
def vgg16_shift_tolerant(last: str = "relu4_1", blur_pad: int = 1) -> FeatureNet:
    """VGG-16 with anti-aliased pooling from the ST-LPIPS wheel (offline; not the paper's VGG-19).

    Reaches up to relu5_3. `blur_pad=2` reproduces the wheel's network exactly (as ST-LPIPS needs);
    the default 1 keeps the layout the style/content losses were built with."""
    if blur_pad not in (1, 2):
        raise ValueError(f"vgg16-shift-tolerant: blur_pad must be 1 (default) or 2 (the wheel's own), got {blur_pad}")
    path = stlpips_weights_path()
    if sha256_of(path) != STLPIPS_SHA256:
        raise ValueError(f"{path}: not the stlpips-pytorch 0.0.2 VGG weights (sha256 differs); reinstall the wheel")
    state = load_state(path)
    layers, taps = vgg_layers(VGG16, last, antialias=True, blur_pad=blur_pad)
    # LPIPS maps [0, 1] -> [-1, 1] then (x - shift) / scale: the same as (x - (1 + shift) / 2) / (scale / 2)
    shift, scale = state["scaling_layer.shift"].flatten(), state["scaling_layer.scale"].flatten()
    net = FeatureNet(layers, taps, (1 + shift) / 2, scale / 2, "vgg16-shift-tolerant")
    prefixes = {f"net.slice{i}.": "" for i in range(1, 6)}
    _load_layers(net, state, prefixes, f"features vgg16-shift-tolerant ({path})")
    return net
