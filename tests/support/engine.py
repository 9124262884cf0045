"""Test-only tiny method and in-memory unpaired data for the engine tests (nothing here ships)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskbridge.data.io import list_images, read_image, save_image
from taskbridge.data.unpaired import EpochDataset
from taskbridge.methods.base import Method
from taskbridge.registry import METHODS

TINY = "_test_engine_tiny"


class TinyMethod(Method):
    """Two optimizer groups (G: 1x1-conv translator, D: a critic), a frozen pre-processor, dropout
    noise from the global RNG and an optional NaN at a given step: everything the engine must handle."""

    inference_modules = ("net",)

    def __init__(self, width: int = 4, nan_at: int | None = None) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 3, 1)  # frozen part: must not go into model.safetensors
        with torch.no_grad():  # the same weights whenever it is built (as frozen weights loaded by name are)
            g = torch.Generator().manual_seed(0)
            self.pre.weight.copy_(torch.eye(3)[:, :, None, None] + 0.1 * torch.randn(3, 3, 1, 1, generator=g))
            self.pre.bias.zero_()
        for p in self.pre.parameters():
            p.requires_grad_(False)
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 3, 1))
        self.critic = nn.Conv2d(3, 1, 3, padding=1)
        self.nan_at = nan_at

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"G": list(self.net.parameters()), "D": list(self.critic.parameters())}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"G": {"type": "adamw", "lr": 1e-2, "weight_decay": 1e-4}, "D": {"type": "adam", "lr": 5e-3, "betas": [0.5, 0.999]}}

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        return (images + self.net(self.pre(images))).clamp(0, 1)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        a = batch["A"] + 0.01 * torch.randn_like(batch["A"])  # global-RNG noise: resume must restore it
        fake = self.translate(a)
        loss_g = F.l1_loss(fake, batch["B"]) - 0.1 * self.critic(fake).mean()
        if self.nan_at is not None and step == self.nan_at:
            loss_g = loss_g * float("nan")
        loss_d = self.critic(fake.detach()).mean() - self.critic(batch["B"]).mean()
        return {"loss/G": loss_g, "loss/D": loss_d, "l1": F.l1_loss(fake, batch["B"]).detach()}

    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor | list[Tensor]]:
        a = batch["A"]
        n = a.shape[0]
        return {
            "degraded": a,
            "translated": self.translate(a),
            "translated/boxes": [torch.tensor([[2.0, 2.0, 20.0, 20.0]])] * n,
            "gate": a.mean(1, keepdim=True),
        }


@contextmanager
def tiny_registered() -> Iterator[None]:
    """Register TinyMethod as a method only while a test needs it, so tests that loop over every
    registered method never meet it."""
    if TINY not in METHODS:
        METHODS.register(TINY)(TinyMethod)
    try:
        yield
    finally:
        METHODS._entries.pop(TINY, None)
        METHODS._docs.pop(TINY, None)


class PairsInMemory(EpochDataset):
    """Unpaired A/B tensors; `set_epoch` re-pairs B by a permutation drawn from (seed, epoch)."""

    def __init__(self, a: Tensor, b: Tensor, seed: int = 0) -> None:
        self.a, self.b, self.seed = a, b, seed
        self.perm = torch.arange(len(b))

    def set_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        self.perm = torch.randperm(len(self.b), generator=g)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.perm[i % len(self.b)])
        return {"A": self.a[i], "B": self.b[j], "A_paths": f"a{i}", "B_paths": f"b{j}"}


def small_images(shared_data: Path, size: int = 32) -> Tensor:
    """The 8 coco8 images resized to size x size."""
    files = list_images(shared_data / "coco8" / "images")
    imgs = [F.interpolate(read_image(f)[None], size=(size, size), mode="bilinear", align_corners=False)[0] for f in files]
    return torch.stack(imgs).clamp(0, 1)


def tiny_pairs(shared_data: Path, size: int = 32) -> PairsInMemory:
    imgs = small_images(shared_data, size)
    return PairsInMemory(imgs[:5] * 0.3, imgs[3:])  # A: darkened, B: clean (sizes 5 and 5)


def write_image_folders(shared_data: Path, root: Path, size: int = 32) -> tuple[Path, Path]:
    """trainA (darkened) and trainB (clean) folders of small PNGs made from coco8."""
    imgs = small_images(shared_data, size)
    a_dir, b_dir = root / "trainA", root / "trainB"
    for i, img in enumerate(imgs[:5]):
        save_image(img * 0.3, a_dir / f"a{i}.png")
    for i, img in enumerate(imgs[3:]):
        save_image(img, b_dir / f"b{i}.png")
    return a_dir, b_dir


def tiny_config(tmp: Path, **train: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "seed": 3,
        "output_dir": str(tmp),
        "data": {"batch_size": 2},
        "method": {"type": TINY, "width": 4},
        "optim": {"D": {"schedule": {"type": "linear_decay", "interval": "epoch", "n_constant": 1, "n_decay": 3}}},
        "schedule": {"type": "cosine_warm_restarts", "T_0": 3, "T_mult": 2, "eta_min": 1e-4},
        "train": {"steps": 7, "log_every": 2, "ckpt_every": 0, "image_every": 0, "progress": False,
                  "tensorboard": False, "device": "cpu", **train},
    }
