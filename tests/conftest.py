"""Shared fixtures: the real data in ../shared/data (nothing is downloaded at test time)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TASKBRIDGE_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()

# Weights resolve from the shared data folder unless the caller points elsewhere.
os.environ.setdefault("TASKBRIDGE_WEIGHTS", str(SHARED_DATA))
os.environ.setdefault("TASKBRIDGE_CACHE", str(REPO / ".pytest_cache" / "taskbridge"))
# Nothing is downloaded at test time: a test that needs a download serves it from a loopback host
# (tests/support/loopback_hosts.py) and switches this off for itself.
os.environ.setdefault("TASKBRIDGE_OFFLINE", "1")
# One intra-op thread: the tests' tensors are small, and on a shared 2-core machine OpenMP threads
# spin-wait; measured 10-25x slower small-tensor steps with 2 threads while another process ran.
torch.set_num_threads(1)
# ... and the CLI's default (every core) stays off for commands the tests run, in process (cli.main) or
# as subprocesses: with OMP_NUM_THREADS set, `taskbridge` leaves torch's count alone. Besides speed, some
# initial weights (QR/SVD-based, e.g. ODCR's) differ in their last bits with the thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set TASKBRIDGE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_clip_cfg() -> dict:
    """An open_clip model config small enough for CPU tests (random weights: no CLIP weights offline)."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"layers": 1, "width": 32, "patch_size": 8, "image_size": 32, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
