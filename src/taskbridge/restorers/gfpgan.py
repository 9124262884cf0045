"""GFP-GAN as a restorer: detect faces, align each to the FFHQ template, restore it, paste it back.

The whole photo goes in and a photo of the same size comes out (or `upscale` x larger), so `taskbridge
restore`, evaluation pipelines and VaT recipes use face restoration like any other restorer. Pixels
away from every face are the input's (or the `background` restorer's) exactly.

[decision] Differences from the reference pipeline (`GFPGANer` + facexlib), each on purpose:
* the face network is deterministic (`randomize_noise` off: the noise buffers are used), so the same
  photo gives the same result twice;
* the detector is our RetinaFace MobileNet-0.25 on shipped MIT weights (the reference downloads a
  ResNet-50 RetinaFace at run time); `detector: mtcnn` is the alternative;
* restored faces stay in float until the photo is written (the reference rounds each face to 8 bits
  before pasting it back);
* the paste-back mask is the reference's classic eroded-and-blurred warped square (its newer default,
  a face-parsing network, has no weights here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.faces import align
from taskbridge.faces.detection import FaceDetections
from taskbridge.registry import FACE_DETECTORS, RESTORERS, TRANSLATORS
from taskbridge.restorers.base import FrozenRestorer

MIN_EYE_DISTANCE = 5.0  # pixels; the reference drops faces smaller than this (landmarks meaningless)
FACE_BATCH = 4  # faces restored at once: a group photo does not hold every face's activations together


@RESTORERS.register("gfpgan")
class GFPGANRestorer(FrozenRestorer):
    """GFP-GAN face restoration of whole photos (detect, align, restore, paste back); weights v1.3/v1.4.

    `weights`: hub name (`gfpgan-v1.4`, `gfpgan-v1.3`), a file in the official layout, or None for a
    randomly initialised network (tests, pipeline checks). `aligned`: inputs are already FFHQ-aligned
    face crops (no detection; the crop is resized to the network and back). `background`: a registered
    restorer applied to the whole photo first (None: the photo itself). `upscale`: output size factor
    (the background is resized bicubically; faces are pasted at the larger size).
    """

    def __init__(
        self,
        weights: str | None = "gfpgan-v1.4",
        detector: str = "retinaface",
        score_threshold: float | None = None,
        only_center_face: bool = False,
        aligned: bool = False,
        upscale: int = 1,
        background: str | None = None,
        out_size: int = 512,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
    ) -> None:
        super().__init__()
        if upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1, got {upscale}")
        self.face_size = int(out_size)
        self.only_center_face = bool(only_center_face)
        self.aligned = bool(aligned)
        self.upscale = int(upscale)
        self.score_threshold = score_threshold
        self.net = TRANSLATORS.create("gfpgan-clean", weights=weights, out_size=out_size,
                                      channel_multiplier=channel_multiplier, narrow=narrow)
        self.detector = None if aligned else FACE_DETECTORS.create(detector)
        self.background = RESTORERS.create(background) if background else None
        self.freeze()

    def restore_face(self, face: Tensor) -> Tensor:
        """[N, 3, s, s] aligned faces in [0, 1] -> restored, same size, in [0, 1]."""
        restored, _ = self.net(face * 2.0 - 1.0)
        return ((restored + 1.0) / 2.0).clamp(0.0, 1.0)

    def detect(self, image: Tensor) -> FaceDetections:
        """Faces of one [3, H, W] photo that can be aligned (eyes at least 5 px apart), best first."""
        assert self.detector is not None
        found = self.detector.detect(image, score_threshold=self.score_threshold)
        found = found.select(found.eye_distance() >= MIN_EYE_DISTANCE)
        if self.only_center_face and len(found) > 1:
            h, w = image.shape[-2:]
            centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
            offset = (centres - torch.tensor([w / 2.0, h / 2.0])).norm(dim=1)
            found = found.select(offset.argmin().reshape(1))
        return found

    def restore_photo(self, image: Tensor) -> tuple[Tensor, FaceDetections]:
        """One [3, H, W] photo -> (restored photo, the faces restored in it)."""
        h, w = image.shape[-2:]
        if self.aligned:
            face = F.interpolate(image[None], size=(self.face_size,) * 2, mode="bilinear", align_corners=False,
                                 antialias=True)
            out = F.interpolate(self.restore_face(face), size=(h * self.upscale, w * self.upscale),
                                mode="bilinear", align_corners=False, antialias=True)
            return out[0].clamp(0.0, 1.0), FaceDetections.empty()
        canvas = self.background(image[None])[0] if self.background is not None else image
        if self.upscale > 1:
            canvas = F.interpolate(canvas[None], scale_factor=self.upscale, mode="bicubic", align_corners=False)[0]
            canvas = canvas.clamp(0.0, 1.0)
        faces = self.detect(image)
        if len(faces) == 0:
            return canvas, faces
        crops, matrices = zip(*(align.align_face(image, lm, self.face_size) for lm in faces.landmarks), strict=True)
        restored = torch.cat([self.restore_face(torch.stack(crops[i:i + FACE_BATCH]))
                              for i in range(0, len(crops), FACE_BATCH)])
        for face, matrix in zip(restored, matrices, strict=True):
            canvas, _ = align.paste_face(canvas, face, matrix, scale=float(self.upscale))
        return canvas, faces

    def forward(self, images: Tensor, **_: Any) -> Tensor:
        self.check_input(images)
        return torch.stack([self.restore_photo(image)[0] for image in images])
