"""What every face detector returns, whatever network found the faces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FaceDetections:
    """Faces found in one image, best score first, in pixel coordinates of that image.

    `boxes` [N, 4] (x1, y1, x2, y2); `scores` [N] in [0, 1]; `landmarks` [N, 5, 2] (x, y) in the order
    image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner (the
    order of RetinaFace, MTCNN and the FFHQ alignment template).
    """

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.landmarks.shape != (n, 5, 2):
            raise ValueError(f"face detections need boxes [N,4], scores [N], landmarks [N,5,2]; got "
                             f"{tuple(self.boxes.shape)}, {tuple(self.scores.shape)}, {tuple(self.landmarks.shape)}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> FaceDetections:
        return FaceDetections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))

    def select(self, index: Tensor) -> FaceDetections:
        return FaceDetections(self.boxes[index], self.scores[index], self.landmarks[index])

    def eye_distance(self) -> Tensor:
        """[N] distance between the two eye landmarks (faces with tiny eye distance are unusable)."""
        return (self.landmarks[:, 0] - self.landmarks[:, 1]).norm(dim=-1)
