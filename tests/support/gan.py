"""Shared helpers of the GAN method tests: tiny configs, a real-photo batch, optimizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from taskbridge.data.io import list_images, read_image

TAPS = ("pad_in", "down1_conv", "down2_conv", "block1", "block2")
TINY: dict[str, dict[str, Any]] = {
    "cyclegan": {"generator": {"ngf": 8, "n_blocks": 2}, "discriminator": {"ndf": 8}, "pool_size": 3},
    "cut": {"generator": {"ngf": 8, "n_blocks": 2}, "discriminator": {"ndf": 8}, "nce_layers": TAPS, "num_patches": 16,
            "netF_nc": 16},
    "fastcut": {"generator": {"ngf": 8, "n_blocks": 2}, "discriminator": {"ndf": 8}, "nce_layers": TAPS,
                "num_patches": 16, "netF_nc": 16},
    "odcr": {"generator": {"ngf": 8, "n_blocks": 2}, "discriminator": {"ndf": 8}, "nce_layers": TAPS,
             "num_patches": 16, "netF_nc": 16},
}


def load_batch(shared_data: Path, n: int = 2, size: int = 32) -> dict[str, Any]:
    """Foggy DAWN photos as A, clean COCO street photos as B, resized small."""
    a = list_images(shared_data / "dawn_fog" / "images")[:n]
    b = list_images(shared_data / "coco256_street" / "images" / "train2017")[:n]

    def load(paths: list[Path]) -> torch.Tensor:
        imgs = [F.interpolate(read_image(p)[None], size=(size, size), mode="bilinear", antialias=True) for p in paths]
        return torch.cat(imgs).clamp(0, 1)

    return {"A": load(a), "B": load(b), "A_paths": a, "B_paths": b}


def build_optimizers(method: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
    out = {}
    for group, params in method.optim_groups().items():
        spec = dict(method.default_optim()[group])
        assert spec.pop("type") == "adam"
        out[group] = torch.optim.Adam(params, lr=spec["lr"], betas=tuple(spec["betas"]))
    return out

