"""GFP-GAN's identity-preserving loss: L1 between face-recognition embeddings of output and ground truth.

GFP-GAN (`gfpgan_model.py`, REFERENCE 5): both images (aligned 512 px faces in [-1, 1]) become grey
``0.2989 R + 0.5870 G + 0.1140 B``, are resized bilinearly to 128 x 128, and go through a frozen ArcFace
ResNet-18 (one input channel); ``loss = 10 * L1(emb(out), emb(gt).detach())``. The whole aligned face is
used, not a crop inside it.

No pretrained identity network is available offline on this machine: GFP-GAN's `arcface_resnet18.pth`
is a release download, and facenet-pytorch (installed) fetches its InceptionResnetV1 weights at run
time. So the network is pluggable: pass any frozen `nn.Module` mapping ``[B, channels, size, size]`` in
`value_range` to ``[B, D]`` embeddings (e.g. facenet's ``InceptionResnetV1(pretrained="vggface2")`` with
``size=160, grey=False, channels=3``, its input being ``(x - 127.5) / 128``, about [-1, 1]). Without one
(`network=None`) the loss is disabled: `enabled` is False and calling it raises an error saying so.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.bounds import NonNegativeFloat, PositiveInt
from taskbridge.registry import LOSSES

GREY = (0.2989, 0.5870, 0.1140)  # GFP-GAN's gray_resize_for_identity weights

NO_NETWORK = (
    "identity loss: no identity network was given, so this loss is disabled. No pretrained one ships offline "
    "(GFP-GAN's ArcFace ResNet-18 arcface_resnet18.pth and facenet-pytorch's InceptionResnetV1 weights download "
    "at run time): pass network= a frozen nn.Module mapping face images to embeddings, or leave the identity "
    "term out (check `.enabled`)."
)


def identity_input(images: Tensor, size: int = 128, grey: bool = True, channels: int = 1,
                   value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> the identity network's input: value range, grey, bilinear resize, channels."""
    lo, hi = value_range
    x = images * (hi - lo) + lo  # GFP-GAN takes the grey of the [-1, 1] image
    if grey:
        x = sum(w * x[:, i:i + 1] for i, w in enumerate(GREY))
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"identity loss: {x.shape[1]} colour channels cannot become {channels}; use grey=True")
        x = x.expand(-1, channels, -1, -1)
    return x


@LOSSES.register("identity")
class IdentityLoss(nn.Module):
    """GFP-GAN's identity loss: weight * L1 of an identity network's embeddings (grey 128 px faces by default).

    `network`: a module mapping faces to embeddings, frozen here (kept in eval mode), or None to disable
    the loss (no pretrained identity network is available offline; see the module docstring).
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        weight: NonNegativeFloat = 10.0,
        size: PositiveInt = 128,
        grey: bool = True,
        channels: Literal[1, 3] = 1,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if not grey and channels != 3:
            raise ValueError("identity loss: colour input (grey=False) needs channels=3")
        self.network = network
        if network is not None:
            network.requires_grad_(False)
            network.eval()
        self.weight, self.size, self.grey, self.channels = float(weight), int(size), bool(grey), int(channels)
        self.value_range = (float(value_range[0]), float(value_range[1]))

    @property
    def enabled(self) -> bool:
        return self.network is not None

    def train(self, mode: bool = True) -> IdentityLoss:  # the identity network never leaves eval mode
        super().train(mode)
        if self.network is not None:
            self.network.eval()
        return self

    def embed(self, images: Tensor) -> Tensor:
        """Embeddings of [B, 3, H, W] images in [0, 1]."""
        if self.network is None:
            raise RuntimeError(NO_NETWORK)
        return self.network(identity_input(images, self.size, self.grey, self.channels, self.value_range))

    def forward(self, out: Tensor, ref: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.embed(ref)
        return self.weight * F.l1_loss(self.embed(out), target)

    def extra_repr(self) -> str:
        return (f"enabled={self.enabled}, weight={self.weight}, size={self.size}, grey={self.grey}, "
                f"channels={self.channels}, value_range={self.value_range}")
