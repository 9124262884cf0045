"""Face alignment to the FFHQ template and paste-back into the photo (the GFP-GAN inference geometry).

A face restorer trained on FFHQ expects faces placed as FFHQ places them: the 5 landmarks moved by a
similarity transform (rotation, uniform scale, translation) onto a fixed template, the rest filled
with a grey border. After restoration the face goes back through the inverse transform and is blended
in with a soft mask, so pixels away from faces are untouched and the seam is invisible.

[decision] The similarity is the closed-form least-squares fit over all 5 points (the reference uses
OpenCV's LMEDS robust fit; with 5 reliable detector landmarks both agree to a fraction of a pixel, and
ours is differentiable and has no random sampling). Warps are kornia's bilinear `warp_affine`.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

#: the 5 FFHQ landmarks (image-left eye, image-right eye, nose, mouth corners) in a 512 x 512 face
FFHQ_TEMPLATE_512 = torch.tensor(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]]
)
#: the reference's border colour around a warped face (grey, RGB 0-255), so the net sees no black edge
BORDER_RGB = (132.0, 133.0, 135.0)


def template(size: int) -> Tensor:
    """The FFHQ template for a `size` x `size` face."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def similarity_transform(src: Tensor, dst: Tensor) -> Tensor:
    """[2, 3] matrix M of the similarity that maps the points `src` [K, 2] closest onto `dst` [K, 2].

    Least squares over (a, b, tx, ty) with M = [[a, -b, tx], [b, a, ty]].
    """
    src, dst = src.double(), dst.double()
    k = src.shape[0]
    x, y = src[:, 0], src[:, 1]
    ones, zeros = torch.ones(k, dtype=src.dtype), torch.zeros(k, dtype=src.dtype)
    rows_u = torch.stack([x, -y, ones, zeros], dim=1)
    rows_v = torch.stack([y, x, zeros, ones], dim=1)
    design = torch.cat([rows_u, rows_v])
    target = torch.cat([dst[:, 0], dst[:, 1]])[:, None]
    a, b, tx, ty = torch.linalg.lstsq(design, target).solution[:, 0]
    return torch.stack([torch.stack([a, -b, tx]), torch.stack([b, a, ty])]).float()


def invert_affine(matrix: Tensor) -> Tensor:
    """[2, 3] -> the [2, 3] matrix of the inverse map."""
    full = torch.cat([matrix.double(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    return torch.linalg.inv(full)[:2].float()


def warp(image: Tensor, matrix: Tensor, size: tuple[int, int], fill: tuple[float, float, float] | None = None) -> Tensor:
    """[3, H, W] float image through the [2, 3] pixel-coordinate `matrix` into an (h, w) canvas.

    Pixels from outside the image get `fill` (RGB in [0, 1]); zeros when None.
    """
    if fill is None:
        out = kornia.geometry.transform.warp_affine(image[None], matrix[None].to(image), dsize=size, mode="bilinear",
                                                    padding_mode="zeros", align_corners=True)
        return out[0]
    fill_value = torch.tensor(fill, dtype=image.dtype, device=image.device)
    out = kornia.geometry.transform.warp_affine(image[None], matrix[None].to(image), dsize=size, mode="bilinear",
                                                padding_mode="fill", align_corners=True, fill_value=fill_value)
    return out[0]


def align_face(image: Tensor, landmarks: Tensor, size: int = 512) -> tuple[Tensor, Tensor]:
    """Crop the face of `landmarks` [5, 2] out of `image` [3, H, W] in [0, 1]: (face [3, size, size], matrix).

    A face that shrinks by more than 1.25x is warped from an antialiased reduced copy of the photo
    (bilinear sampling alone would alias); `matrix` always maps pixels of `image` itself.
    """
    matrix = similarity_transform(landmarks, template(size))
    fill = tuple(c / 255.0 for c in BORDER_RGB)
    scale = float(matrix[:, :2].det().abs().sqrt())
    if scale >= 0.8:
        return warp(image, matrix, (size, size), fill), matrix
    h, w = image.shape[-2:]
    small_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(image[None], size=small_hw, mode="bilinear", align_corners=False, antialias=True)[0]
    # pixel centres: x = (x_small + 0.5) * w / w_small - 0.5, so M_small = M @ [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    fx, fy = w / small_hw[1], h / small_hw[0]
    to_full = torch.tensor([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    small_matrix = matrix @ to_full
    return warp(small, small_matrix, (size, size), fill), matrix


def paste_mask(face_size: int, matrix: Tensor, image_size: tuple[int, int]) -> Tensor:
    """[1, H, W] soft mask in [0, 1] of where a restored face lands in the photo.

    As the reference: the warped all-ones face square, eroded so its bilinear edge is gone, then
    eroded again and blurred over a width that grows with the face (about sqrt(area) / 20), so large
    faces get a proportionally soft seam.
    """
    inverse = invert_affine(matrix)
    ones = torch.ones(1, face_size, face_size)
    mask = warp(ones, inverse, image_size)[None]
    mask = (mask > 0.999).float()  # drop the half-covered rim of the bilinear warp
    mask = kornia.morphology.erosion(mask, torch.ones(3, 3))
    area = float(mask.sum())
    if area == 0:
        return mask[0]
    edge = max(1, int(math.sqrt(area) / 20))
    mask = kornia.morphology.erosion(mask, torch.ones(2 * edge + 1, 2 * edge + 1))
    blur = 2 * edge + 1
    mask = kornia.filters.gaussian_blur2d(mask, (blur, blur), (blur / 3.0, blur / 3.0), border_type="constant")
    return mask[0].clamp(0.0, 1.0)


def paste_face(canvas: Tensor, face: Tensor, matrix: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Blend the restored `face` [3, s, s] back into `canvas` [3, H, W] (already `scale` x the photo).

    `matrix` maps photo pixels to face pixels; returns (new canvas, the mask used).
    """
    if scale != 1.0:
        matrix = matrix.clone()
        matrix[:, :2] = matrix[:, :2] / scale
    size = (int(canvas.shape[-2]), int(canvas.shape[-1]))
    back = warp(face, invert_affine(matrix), size)
    mask = paste_mask(int(face.shape[-1]), matrix, size).to(canvas)
    return mask * back + (1.0 - mask) * canvas, mask
