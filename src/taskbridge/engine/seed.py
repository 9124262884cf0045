"""Seeds and random-number-generator state, so a resumed run continues the same random streams.

Every stream that training reads (torch CPU, every CUDA device, numpy's global generator,
Python's `random`) is captured as plain data: byte tensors for torch, JSON-able lists for the
others, which is what the checkpoint writer stores (tensors in safetensors, the rest in JSON).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (all devices); `deterministic` also asks cuDNN/torch for determinism."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def capture_rng() -> dict[str, Any]:
    """A snapshot of every global random stream (torch tensors + JSON-able values)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": np.asarray(np_state[1]).astype(np.int64).tolist(),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`; CUDA states are restored only when the same devices exist."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    npd = state["numpy"]
    np.random.set_state(
        (npd["kind"], np.asarray(npd["keys"], dtype=np.uint32), npd["pos"], npd["has_gauss"], npd["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(torch.uint8).cpu() for t in cuda])


def isolated_rng(device: torch.device | None = None) -> contextlib.AbstractContextManager[None]:
    """Random draws inside leave the run's streams untouched: work only rank 0 does (building the validator,
    validating, drawing image grids) must not shift its RNG away from the other ranks'."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader workers: derive numpy/Python seeds from the per-worker torch seed (torch does not)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (e.g. run seed, epoch), independent of Python's hash salt."""
    h = 1469598103934665603
    for p in parts:
        for byte in int(p).to_bytes(8, "little", signed=True):
            h = ((h ^ byte) * 1099511628211) % 2**64
    return h % 2**63
