"""scripts/gpu_vat_fits.sh (run here on the CPU): its packed runs are weights-only copies that apply as they are."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from taskbridge.inference import load_inference_model

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_packed_runs_apply_after_unpacking(shared_data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RECIPES": "lowlight-cls-vat", "SEEDS": "0", "DEVICE": "cpu", "WORKERS": "0",
           "RUN_ROOT": str(tmp_path / "runs"), "PYTHON": sys.executable, "DATA": str(shared_data),
           "FIT_SECONDS": "300", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_vat_fits.sh"), str(out), "train.steps=2",
                           "train.val_every=2", "data.batch_size=4", "method.nuq_fit.max_images=16",
                           "method.translator={type: vat, width: 4, global_residual: true}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lowlight-cls-vat seed 0: fit exit 0" in (out / "fits.txt").read_text()
    with tarfile.open(out / "lowlight-cls-vat.tgz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "back", filter="data")
    assert not any(n.endswith(("state.safetensors", ".png", "report.html")) for n in names)  # weights and logs only
    run = next((tmp_path / "back").rglob("lowlight-cls-vat-s0"))
    assert {"metrics.jsonl", "run_info.json", "split_pools.json", "checkpoints"} <= {p.name for p in run.iterdir()}
    x = torch.rand(2, 3, 32, 32)
    packed, original = load_inference_model(run), load_inference_model(tmp_path / "runs" / "lowlight-cls-vat-s0")
    assert torch.equal(packed(x), original(x))
