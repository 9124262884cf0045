"""CycleGAN's history of generated images (REFERENCE 4): D sees a mix of old and new fakes.

Why: updating D only on the latest generator's output makes the GAN oscillate; a buffer of
`size` past fakes (Shrivastava et al. 2017) damps that.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor


class ImagePool:
    """Per image: while filling, store and return it; then with p 0.5 return a random stored
    fake (replacing it by the new one), else the new one. `size` 0 disables the pool."""

    def __init__(self, size: int = 50, seed: int | None = None) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[Tensor] = []
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def state(self) -> dict:
        """Stored fakes and the sampler position: what exact resume needs beyond the weights."""
        version, internal, gauss = self._rng.getstate()
        return {"images": [i.cpu() for i in self.images], "rng": [version, list(internal), gauss]}

    def load_state(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        self.images = [i.clone() for i in state["images"]]

    def query(self, images: Tensor) -> Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for img in images:
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self._rng.random() > 0.5:
                i = self._rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)
