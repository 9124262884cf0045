"""RetinaFace MobileNet-0.25 (Deng et al., CVPR 2020): our implementation, the shipped WIDER FACE weights.

Layout (key names of biubug6's public PyTorch re-implementation, which the shipped state dict uses):
MobileNetV1 x0.25 body (stages of stride 8 / 16 / 32 with 64 / 128 / 256 channels) -> FPN to 64
channels over 3 levels -> one SSH context module per level -> 1x1 class / box / 5-landmark heads with
2 anchors per location. Boxes and landmarks are offsets from square anchors with variances (0.1, 0.2).

[decision] The shipped file is `weights/mobilenet0.25_Final.pth` of biubug6/Face-Detector-1MB-with-landmark
(see retinaface_weights/README.md), NOT the Google-Drive file of biubug6/Pytorch_Retinaface. That repository
retrained the model with two changes its README states ("modified the anchor sizes ... for edge
computing") and its code shows: anchors min_sizes (10, 20) / (32, 64) / (128, 256) instead of
(16, 32) / (64, 128) / (256, 512), and plain ReLU everywhere instead of LeakyReLU 0.1 in the body,
FPN and SSH. Neither fact is visible in the tensors (anchors and activations hold no weights), so we
checked them on FairFace photos against MTCNN's landmarks; see `RetinaFaceConfig` for the numbers.
retinaface_weights/README.md lists the Pytorch_Retinaface anchors: they do not fit these weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from taskbridge import hub
from taskbridge.faces.detection import FaceDetections
from taskbridge.registry import FACE_DETECTORS
from taskbridge.state_dicts import load_prefixed, unwrap_state

BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class RetinaFaceConfig:
    """Facts of the network that the weights cannot tell: anchors, variances, activation slopes.

    [decision] Defaults are those of the repository the weights come from (Face-Detector-1MB-with-
    landmark: small anchors, ReLU), whose own code, run on these weights, gives outputs equal to ours
    (max difference 0). Checked on 60 FairFace photos (every 9th) against MTCNN: with these defaults
    RetinaFace's inter-ocular distance and box width are 0.97x and 1.01x MTCNN's (median) and the
    best face scores 0.998 (median); with the Pytorch_Retinaface anchors both ratios are 1.95x and 2.01x
    (landmarks spread around the anchor centre 1.6x too far), and with its LeakyReLU 0.1 the best face
    scores 0.855 and only 14 of 60 photos give one face above 0.5 (41 of 60 with ReLU).
    """

    min_sizes: tuple[tuple[int, ...], ...] = ((10, 20), (32, 64), (128, 256))
    steps: tuple[int, ...] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)
    body_slope: float = 0.0  # negative slope of the body's activations (0 = ReLU)
    neck_slope: float = 0.0  # the same for FPN and SSH


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, slope: float | None, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias) + BN (+ LeakyReLU of `slope`, none when slope is None): keys `.0`, `.1`."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope) if slope else nn.ReLU())
    return layers


def _depthwise_separable(cin: int, cout: int, stride: int, slope: float) -> nn.Sequential:
    """3x3 depthwise + 1x1 pointwise, each with BN and activation: keys `.0 .1` and `.3 .4`."""
    return nn.Sequential(*_conv_bn(cin, cin, 3, stride, slope, groups=cin), *_conv_bn(cin, cout, 1, 1, slope))


class MobileNetV1Quarter(nn.Module):
    """MobileNetV1 with width x0.25, cut after the stride-32 stage (the classifier is not shipped)."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        dw = _depthwise_separable
        self.stage1 = nn.Sequential(nn.Sequential(*_conv_bn(3, 8, 3, 2, slope)), dw(8, 16, 1, slope),
                                    dw(16, 32, 2, slope), dw(32, 32, 1, slope), dw(32, 64, 2, slope),
                                    dw(64, 64, 1, slope))
        self.stage2 = nn.Sequential(dw(64, 128, 2, slope), *[dw(128, 128, 1, slope) for _ in range(5)])
        self.stage3 = nn.Sequential(dw(128, 256, 2, slope), dw(256, 256, 1, slope))

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class FPN(nn.Module):
    """Three 1x1 laterals to `width` channels, top-down nearest upsampling, 3x3 merges on the two finer levels."""

    def __init__(self, in_channels: tuple[int, int, int], width: int, slope: float) -> None:
        super().__init__()
        self.output1, self.output2, self.output3 = (nn.Sequential(*_conv_bn(c, width, 1, 1, slope)) for c in in_channels)
        self.merge1 = nn.Sequential(*_conv_bn(width, width, 3, 1, slope))
        self.merge2 = nn.Sequential(*_conv_bn(width, width, 3, 1, slope))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3, sharing the first) branches, concatenated, ReLU."""

    def __init__(self, width: int, slope: float) -> None:
        super().__init__()
        self.conv3X3 = nn.Sequential(*_conv_bn(width, width // 2, 3, 1, None))
        self.conv5X5_1 = nn.Sequential(*_conv_bn(width, width // 4, 3, 1, slope))
        self.conv5X5_2 = nn.Sequential(*_conv_bn(width // 4, width // 4, 3, 1, None))
        self.conv7X7_2 = nn.Sequential(*_conv_bn(width // 4, width // 4, 3, 1, slope))
        self.conv7x7_3 = nn.Sequential(*_conv_bn(width // 4, width // 4, 3, 1, None))

    def forward(self, x: Tensor) -> Tensor:
        mid = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], 1))


class _Head(nn.Module):
    """1x1 conv giving `per_anchor` numbers for each anchor, flattened to [B, H*W*anchors, per_anchor]."""

    def __init__(self, width: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(width, anchors * per_anchor, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # anchor index = (row * W + col) * anchors + a
        return out.reshape(out.shape[0], -1, self.per_anchor)


def anchor_grid(sizes: list[tuple[int, int]], steps: tuple[int, ...], min_sizes: tuple[tuple[int, ...], ...]) -> Tensor:
    """[A, 4] anchors (cx, cy, w, h) in input pixels, level by level, row-major, sizes innermost
    (the order of the heads' outputs). `sizes` are the (H, W) of each level's feature map."""
    out = []
    for (fh, fw), step, level_sizes in zip(sizes, steps, min_sizes, strict=True):
        ys, xs = torch.meshgrid((torch.arange(fh) + 0.5) * step, (torch.arange(fw) + 0.5) * step, indexing="ij")
        centres = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, len(level_sizes), 2)
        wh = torch.tensor(level_sizes, dtype=torch.float32).reshape(1, -1, 1).expand(fh * fw, -1, 2)
        out.append(torch.cat([centres, wh], -1).reshape(-1, 4))
    return torch.cat(out)


def feature_sizes(h: int, w: int, steps: tuple[int, ...]) -> list[tuple[int, int]]:
    """Feature map sizes of an h x w input: each stride-2 3x3 conv (padding 1) gives ceil(n / 2)."""
    sizes = []
    for step in steps:
        hh, ww = h, w
        for _ in range(int(math.log2(step))):
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
        sizes.append((hh, ww))
    return sizes


def decode(deltas: Tensor, landmark_deltas: Tensor, anchors: Tensor, variance: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Boxes [A, 4] xyxy and landmarks [A, 5, 2] from the head's offsets (SSD encoding with variances)."""
    centre, size = anchors[:, :2], anchors[:, 2:]
    c = centre + deltas[:, :2] * variance[0] * size
    wh = size * torch.exp(deltas[:, 2:] * variance[1])
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    marks = centre[:, None] + landmark_deltas.reshape(-1, 5, 2) * variance[0] * size[:, None]
    return boxes, marks


@FACE_DETECTORS.register("retinaface")
class RetinaFace(nn.Module):
    """RetinaFace MobileNet-0.25: faces with 5 landmarks (0.43 M parameters, WIDER FACE weights).

    `detect(image [3,H,W] RGB in [0,1]) -> FaceDetections` in the image's pixels. Frozen: no parameter
    needs grad and the module stays in eval mode whatever `train()` is called with.

    [decision] `score_threshold` 0.8 (benchmarks/bench_face_detectors.py, 540 FairFace photos): the
    face at the photo centre scores above it on 539 photos; most spurious boxes score 0.3-0.8 (photos
    with more than one face: 252 at 0.3, 137 at 0.8), and above 0.8 the extra faces are mostly real
    people behind (106 of 170 also found by MTCNN). facexlib's 0.97 belongs to the ResNet-50 model:
    here it would lose the centre face on 6 more photos to make 42 more one-face photos, often by
    dropping real faces. A pipeline that wants one face should pick it (centre or largest), not raise
    the threshold.
    [decision] `max_size` 1024: a photo whose long side is larger is downscaled (antialiased) for
    detection and the coordinates mapped back. The largest anchor is 256 px and faces up to ~450 px
    are still found (FairFace photos upscaled 3x: 14 of 15 centre faces), so at 1024 a face filling
    the short side of a 4:3 photo stays findable, while the 10 px smallest anchor keeps faces of
    20 px in a 2048 px group photo. None: always the full resolution.
    """

    def __init__(self, weights: str | None = "retinaface-mobilenet0.25", score_threshold: float = 0.8,
                 nms_threshold: float = 0.4, max_size: int | None = 1024, top_k: int = 5000, keep_top_k: int = 750,
                 config: RetinaFaceConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or RetinaFaceConfig()
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.max_size, self.top_k, self.keep_top_k = max_size, top_k, keep_top_k
        per_level = {len(s) for s in cfg.min_sizes}
        if len(per_level) != 1:
            raise ValueError(f"every level needs the same number of anchors; got min_sizes {cfg.min_sizes}")
        anchors = per_level.pop()
        width = 64
        self.body = MobileNetV1Quarter(cfg.body_slope)
        self.fpn = FPN((64, 128, 256), width, cfg.neck_slope)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(width, cfg.neck_slope) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(width, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(width, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(width, anchors, 10) for _ in range(3))
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_weights(weights)
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    def load_weights(self, weights: str) -> None:
        """Strict load (`weights_only=True`); a mismatch is one line naming the file and the keys."""
        path = hub.resolve(weights) if weights in hub.weight_names() and not Path(weights).is_file() else Path(weights)
        where = f"RetinaFace weights {path}"
        load_prefixed(self, unwrap_state(hub.load_state(path), where), where)

    def train(self, mode: bool = True) -> RetinaFace:  # noqa: ARG002 - always eval (frozen BatchNorm)
        return super().train(False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw head outputs of RGB [B,3,H,W] in [0,1]: box offsets [B,A,4], class logits [B,A,2]
        (background, face), landmark offsets [B,A,10]. The network sees BGR x 255 minus the mean."""
        x = images.flip(1) * 255.0 - self.mean.to(images.dtype)
        feats = self.fpn(self.body(x))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        return (torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], 1),
                torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], 1),
                torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], 1))

    def anchors(self, h: int, w: int) -> Tensor:
        """[A, 4] anchors (cx, cy, w, h) in pixels of an h x w network input."""
        return anchor_grid(feature_sizes(h, w, self.config.steps), self.config.steps, self.config.min_sizes)

    @torch.no_grad()
    def detect(self, image: Tensor, score_threshold: float | None = None) -> FaceDetections:
        """Faces of one RGB image [3,H,W] float in [0,1], best first, in its pixels."""
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"detect takes one RGB image [3, H, W] float in [0, 1] (repeat grey to 3 channels); got {shape}")
        return self.detect_batch(image[None], score_threshold)[0]

    @torch.no_grad()
    def detect_batch(self, images: Tensor, score_threshold: float | None = None) -> list[FaceDetections]:
        """`detect` for a batch [B,3,H,W] of same-size images."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"detect_batch takes RGB images [B, 3, H, W] float in [0, 1]; got {shape}")
        h, w = images.shape[-2:]
        scale = 1.0
        if self.max_size is not None and max(h, w) > self.max_size:
            scale = self.max_size / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        param = next(self.parameters())
        images = images.to(param.device, param.dtype)
        deltas, logits, marks = self(images)
        anchors = self.anchors(*images.shape[-2:]).to(images.device, images.dtype)
        if anchors.shape[0] != deltas.shape[1]:
            raise RuntimeError(f"{anchors.shape[0]} anchors for {deltas.shape[1]} head outputs at {tuple(images.shape[-2:])}")
        thr = self.score_threshold if score_threshold is None else score_threshold
        sx, sy = (w / images.shape[-1], h / images.shape[-2]) if scale != 1.0 else (1.0, 1.0)
        out = []
        for d, lg, m in zip(deltas, logits, marks, strict=True):
            out.append(self._postprocess(d, lg.softmax(-1)[:, 1], m, anchors, thr, sx, sy))
        return out

    def _postprocess(self, deltas: Tensor, scores: Tensor, marks: Tensor, anchors: Tensor, thr: float,
                     sx: float, sy: float) -> FaceDetections:
        """Score threshold -> top_k -> NMS -> keep_top_k (the reference's order), then back to input pixels."""
        keep = (scores > thr).nonzero().squeeze(1)
        keep = keep[scores[keep].argsort(descending=True)[: self.top_k]]
        if keep.numel() == 0:
            return FaceDetections.empty()
        boxes, landmarks = decode(deltas[keep], marks[keep], anchors[keep], self.config.variance)
        kept = torchvision.ops.nms(boxes, scores[keep], self.nms_threshold)[: self.keep_top_k]
        factor = torch.tensor([sx, sy], dtype=boxes.dtype, device=boxes.device)
        return FaceDetections((boxes[kept].reshape(-1, 2, 2) * factor).reshape(-1, 4).float().cpu(),
                              scores[keep][kept].float().cpu(), (landmarks[kept] * factor).float().cpu())
