"""Networks come from recipe sections through the registries, and every shipped recipe builds what it did.

`golden_networks.json` was recorded from the code before methods took `generator:` / `discriminator:` /
`translator:` sections (c23cf54, one line per recipe: parameters per optimizer group, number of state-dict
entries, sha256 of the trainable state dict's keys and initial values under the recipe's seed). Any change
to a default network, its initialisation or the order in which a method builds its networks breaks it.
The ODCR entries were re-recorded (same code) when their hash turned out to depend on the CPU: the tensors its
orthogonal parametrizations derive through LAPACK are now compared with a tolerance (`lapack`), the rest exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from taskbridge.checkpoint import trainable_state
from taskbridge.config import load_recipe, to_dict
from taskbridge.engine.seed import seed_everything
from taskbridge.inference.load import build_method
from taskbridge.registry import METHODS

REPO = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).with_name("golden_networks.json")).read_text())


def _fingerprint(method: torch.nn.Module) -> dict:
    """Exact for what the seeded generator draws; tensors that a parametrization derives through LAPACK (the
    orthogonal heads of ODCR: a QR at registration) differ in their last bits between CPUs (AVX2 / AVX-512
    machines), so those are recorded as sums of absolute values and compared with a tolerance."""
    state = trainable_state(method)
    h = hashlib.sha256()
    n = 0
    lapack = {}
    for k in sorted(state):
        v = state[k]
        if isinstance(v, torch.Tensor):
            n += 1
            if ".parametrizations." in k:
                lapack[k] = float(v.detach().double().abs().sum())
                continue
            h.update(k.encode())
            h.update(v.detach().float().contiguous().numpy().tobytes())
    groups = {g: sum(p.numel() for p in ps) for g, ps in method.optim_groups().items()}
    return {"groups": groups, "n_keys": n, "sha256": h.hexdigest(), **({"lapack": lapack} if lapack else {})}


@pytest.mark.parametrize("recipe", sorted(GOLDEN))
def test_shipped_recipes_build_the_same_networks(recipe: str) -> None:
    cfg = to_dict(load_recipe(REPO / recipe))
    seed_everything(int(cfg.get("seed", 0)))
    got, want = _fingerprint(build_method(cfg)), dict(GOLDEN[recipe])
    assert got.pop("lapack", {}) == pytest.approx(want.pop("lapack", {}), rel=1e-5)
    assert got == want


def test_golden_covers_every_method_recipe() -> None:
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml")
               if "splits" not in p.parts and "type" in (to_dict(load_recipe(p)).get("method") or {})}
    assert shipped == set(GOLDEN)


@pytest.mark.parametrize(("name", "groups"), [
    ("cyclegan", {"G": 2 * 11_378_179, "D": 2 * 2_764_737}),  # REFERENCE 4: G 11.378 M, D 2.765 M
    # + PatchNCE heads Linear(C, 256)-Linear(256, 256) on the taps of 3, 128, 256, 256, 256 channels: 560,384
    ("cut", {"G": 11_378_179 + 560_384, "D": 2_764_737}),
    ("hierarchy-flow", {"G": 1_017_362}),  # the public config's network (HF, [30, 120], learned alpha)
])
def test_default_sections_are_the_published_networks(name: str, groups: dict[str, int]) -> None:
    method = METHODS.create(name)
    assert {g: sum(p.numel() for p in ps) for g, ps in method.optim_groups().items()} == groups
