"""The classic CIFAR-10 ResNet (He et al. 2016, section 4.2), loading the published weights.

Our implementation of the architecture: 3x3 conv with 16 channels, three stages of 6n+2 layers
(16/32/64 channels, n=3 for ResNet20, n=9 for ResNet56), identity shortcut "option A" (stride-2
subsampling plus zero channel padding, no parameters), global average pooling, linear 64->10.
The weights (github.com/akamaster/pytorch_resnet_cifar10, BSD-2-Clause; see
../shared/data/cifar10_resnet_weights/README.md) expect ImageNet mean/std normalisation, which
this task applies itself: its input is an RGB image in [0, 1] like every other task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge import hub
from taskbridge.registry import TASKS
from taskbridge.tasks.base import ClassificationTask

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a parameter-free (option A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes  # channels to add with zeros in the shortcut

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; works on other sizes through global pooling."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def stages(self, x: Tensor) -> list[Tensor]:
        """The outputs of the three stages (16, 32, 64 channels)."""
        s1 = self.layer1(F.relu(self.bn1(self.conv1(x))))
        s2 = self.layer2(s1)
        return [s1, s2, self.layer3(s2)]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(F.adaptive_avg_pool2d(self.stages(x)[-1], 1).flatten(1))


class CifarResNetTask(ClassificationTask):
    """Frozen CIFAR-10 ResNet classifier taking RGB [0, 1] images (normalisation inside)."""

    def __init__(self, depth: int, weights: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        self.net = CifarResNet((depth - 2) // 6)
        self.class_names = list(CIFAR10_CLASSES)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None or pretrained:
            self.load_weights(weights or f"cifar-resnet{depth}")
        self.freeze()

    def load_weights(self, name_or_path: str) -> None:
        """Load a hub name or file; accepts the published `{state_dict: {module.*}}` layout or a plain dict."""
        state = hub.load_state(name_or_path)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError(
                f"{name_or_path}: not a CIFAR ResNet checkpoint of this depth "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )

    def _normalised(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        return (images - self.mean) / self.std

    def raw(self, images: Tensor) -> Tensor:
        return self.net(self._normalised(images))

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """The three stages' feature maps, differentiable w.r.t. `images`."""
        return self.net.stages(self._normalised(images))


@TASKS.register("cifar-resnet20")
def cifar_resnet20(weights: str | None = None, pretrained: bool = True) -> CifarResNetTask:
    """CIFAR-10 ResNet20 (0.27 M params; 91.6 % on the shared 1,017-image test subset)."""
    return CifarResNetTask(20, weights, pretrained)


@TASKS.register("cifar-resnet56")
def cifar_resnet56(weights: str | None = None, pretrained: bool = True) -> CifarResNetTask:
    """CIFAR-10 ResNet56 (0.85 M params; 92.7 % on the shared 1,017-image test subset)."""
    return CifarResNetTask(56, weights, pretrained)
