"""`InferenceModel`: a trained method as one inference stage that says what it owns.

It owns the method's translator and, for methods such as VaT, the frozen restorer the method
applies inside `translate` (so nothing outside may apply it again). Photos of any size are
translated at a working size (the run's `inference.working_size`, e.g. VaT's training size) as the
VaT evaluation does it (REFERENCE 1.9): the photo is resized (square, aspect not kept, as in
training), translated, and in residual mode the change r = T(x_s) - x_s is upsampled bilinearly
and added to the full-resolution photo, so its detail survives; without residual mode the output
itself is upsampled. `working_size=None` translates at the photo's own resolution.

`translate_uint8` does the same on an 8-bit photo in bounded memory: the photo is reduced and the
change enlarged one band of rows at a time (bilinear resizing is separable, so a band needs only its
rows of the interpolation matrices), so a 12000 x 12000 photo never exists as floats. The network
itself sees only the working-size copy; at native resolution (`working_size=None`) the whole photo
goes through the network and memory is the network's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.data.transforms import to_uint8


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def bilinear_weights(n_out: int, n_in: int) -> Tensor:
    """[n_out, n_in] matrix of 1-D bilinear resizing as F.interpolate(align_corners=False) computes it."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, i0), 1 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w.float()


BAND = 512  # rows of the full-resolution photo handled at once by `translate_uint8`


def as_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if size is None or size == 0:
        return None
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


class InferenceModel(nn.Module):
    """`translate(images, reference=None)`: [B, 3, H, W] photos in [0, 1] -> translated photos of the same size."""

    def __init__(self, method: nn.Module, working_size: int | tuple[int, int] | None = None, residual: bool = True,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.method = method
        self.working_size = as_size(working_size)
        self.residual = bool(residual)
        self.meta = dict(meta or {})

    @property
    def restorer(self) -> nn.Module | None:
        """The restorer this model applies itself (None if it applies none)."""
        return self.method.owned_restorer()

    def owns(self) -> dict[str, Any]:
        """What this stage does to a photo, for result files and error messages."""
        restorer = self.restorer
        return {
            "stage": "translator",
            "method": self.meta.get("method") or type(self.method).__name__,
            "restorer": None if restorer is None else getattr(restorer, "name", type(restorer).__name__),
            "working_size": list(self.working_size) if self.working_size else "native resolution",
            "residual": self.residual if self.working_size else None,
            **{k: self.meta[k] for k in ("path", "step", "selected_by") if k in self.meta},
        }

    describe = owns

    def _fit(self, images: Tensor) -> Tensor:
        """`images` padded (edge pixels repeated, bottom and right) to the size the method's networks need."""
        multiple = int(getattr(self.method, "size_multiple", 1))
        least = int(getattr(self.method, "min_size", 1))
        h, w = images.shape[-2:]
        ph, pw = (-max(h, least)) % multiple + max(0, least - h), (-max(w, least)) % multiple + max(0, least - w)
        return F.pad(images, (0, pw, 0, ph), mode="replicate") if ph or pw else images

    def _any_size(self, images: Tensor, **kwargs: Any) -> Tensor:
        """The method on any size: padded to the size its networks need, cropped back."""
        h, w = images.shape[-2:]
        return self.method.translate(self._fit(images), **kwargs)[..., :h, :w].clamp(0, 1)

    def prepare_reference(self, reference: Tensor) -> Tensor:
        """A reference (style) image [3, H, W] or [B, 3, H, W] as the method takes it: at the working size (the
        scale style images had in training), or padded like a photo to the size the networks need.

        A method without a use for a reference refuses it here, in one line.
        """
        if not getattr(self.method, "uses_reference", False):
            raise ValueError(f"{self.owns()['method']} translates without a reference image; drop --reference")
        reference = (reference[None] if reference.dim() == 3 else reference).float()
        return _resize(reference, self.working_size) if self.working_size else self._fit(reference)

    def _reference_kwargs(self, reference: Tensor | None) -> dict[str, Tensor]:
        return {} if reference is None else {"reference": self.prepare_reference(reference)}

    @torch.no_grad()
    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        kwargs = self._reference_kwargs(reference)
        if self.working_size is None:
            return self._any_size(images, **kwargs)
        full = tuple(images.shape[-2:])
        small = _resize(images, self.working_size)
        out = self._any_size(small, **kwargs)
        if self.residual:
            return (images + _resize(out - small, full)).clamp(0, 1)
        return _resize(out, full).clamp(0, 1)

    @torch.no_grad()
    def translate_uint8(self, image: Tensor, reference: Tensor | None = None, band: int = BAND) -> Tensor:
        """An 8-bit [3, H, W] photo -> its 8-bit translation; at a working size, in bands of rows."""
        if self.working_size is None:
            return to_uint8(self.translate(image[None].float() / 255.0, reference)[0])
        (H, W), (h, w) = image.shape[-2:], self.working_size
        dev = image.device
        down_y, down_x = bilinear_weights(h, H).to(dev), bilinear_weights(w, W).to(dev)
        small = torch.zeros(3, h, w, device=dev)
        for y0 in range(0, H, band):
            rows = image[:, y0:y0 + band].float() / 255.0
            small += down_y[:, y0:y0 + band] @ rows @ down_x.T
        small = small[None]
        kwargs = self._reference_kwargs(reference)
        change = self._any_size(small, **kwargs)[0]
        if self.residual:
            change = change - small[0]
        up_y, up_x = bilinear_weights(H, h).to(dev), bilinear_weights(W, w).to(dev)
        out = torch.empty_like(image)
        for y0 in range(0, H, band):
            part = up_y[y0:y0 + band] @ change @ up_x.T
            if self.residual:
                part = part + image[:, y0:y0 + band].float() / 255.0
            out[:, y0:y0 + band] = to_uint8(part)
        return out

    def forward(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        return self.translate(images, reference)
