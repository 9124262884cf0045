"""Anti-aliased resampling layers for the CUT generator and discriminator (REFERENCE 2.1).

Why: strided convolutions alias; CUT replaces them by a stride-1 convolution followed by a fixed
blur-and-subsample, and transposed convolutions by a fixed blur-upsample. Both layers have no
parameters, so parameter counts equal the plain (CycleGAN) networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BlurPool2d(nn.Module):
    """Reflect-pad by 1, depthwise [1,2,1]x[1,2,1]/16 blur, stride 2 (H, W -> ceil(H/2), ceil(W/2)).

    kornia's `BlurPool2D` zero-pads, which darkens borders; the reference pads by reflection,
    so this is a small own layer.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k2 = torch.outer(k, k)
        k2 = k2 / k2.sum()
        self.channels = channels
        self.register_buffer("kernel", k2.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class BlurUpsample2d(nn.Module):
    """x2 upsampling with the fixed [1,3,3,1] transposed blur and replicate borders.

    The reference layer (replicate pad 1, transposed conv with outer([1,3,3,1])/16, stride 2,
    crop) gives out[2i] = 3/4 x[i] + 1/4 x[i-1] and out[2i+1] = 3/4 x[i] + 1/4 x[i+1] with
    clamped borders, i.e. exactly half-pixel bilinear x2 interpolation, which is what we run
    (tests check the equality against the explicit transposed convolution).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class InstanceNorm2d(nn.InstanceNorm2d):
    """`nn.InstanceNorm2d` that receives its output gradient in contiguous memory.

    PyTorch 2.14.1 on CPU returns a wrong input gradient from instance norm when the batch holds one
    image and the output gradient arrives channels-last, which is what indexing patches out of a
    [B, H*W, C] view (PatchNCE) produces: CUT, FastCUT and ODCR at their published batch size 1 got
    wrong generator gradients (tests/modules/test_instance_norm_grad.py shows the PyTorch behaviour).
    Same parameters, buffers and outputs as the PyTorch layer.
    """

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if out.requires_grad:  # fires with the gradient of this output, also when a later op works in place
            out.register_hook(Tensor.contiguous)
        return out


def make_norm(norm: str, channels: int) -> nn.Module:
    """'instance' = InstanceNorm without affine or running stats (CycleGAN/CUT), 'batch', or 'none'."""
    if norm == "instance":
        return InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'instance', 'batch' or 'none', got '{norm}'")


def init_weights(module: nn.Module, init: str = "normal", gain: float = 0.02) -> None:
    """CycleGAN: normal(0, gain); CUT: xavier_normal(gain). Biases 0, BatchNorm weight N(1, gain)."""
    if init not in ("normal", "xavier", "kaiming", "orthogonal"):
        raise ValueError(f"init must be normal, xavier, kaiming or orthogonal, got '{init}'")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
