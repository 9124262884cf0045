"""scripts/vat_constant_gate.py: the copy is exactly the fixed blend, and is scored on the split asked for."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.inference import load_inference_model
from taskbridge.translators.vat import VaTTranslator

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vat_constant_gate.py"


@pytest.mark.parametrize("pool", ["pixel", "image"])
@pytest.mark.parametrize("gate", [0.0, 0.3, 1.0])
def test_constant_gate_is_the_fixed_blend(script: ModuleType, gate: float, pool: str) -> None:
    torch.manual_seed(0)
    method = SimpleNamespace(T_A=VaTTranslator(width=8, global_residual=True, out_init_std=1e-2, gate_pool=pool))
    restored, degraded = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)
    assert not torch.allclose(method.T_A(restored, degraded), (1 - gate) * restored + gate * degraded, atol=1e-4)
    script.set_constant_gate(method, gate)
    torch.testing.assert_close(method.T_A(restored, degraded), (1 - gate) * restored + gate * degraded)


def test_constant_gate_needs_the_fusion_and_an_identity(script: ModuleType) -> None:
    with pytest.raises(ValueError, match="gated fusion"):
        script.set_constant_gate(SimpleNamespace(T_A=VaTTranslator(in_channels=3)), 0.5)
    with pytest.raises(ValueError, match="global_residual"):
        script.set_constant_gate(SimpleNamespace(T_A=VaTTranslator(width=8)), 0.5)


def test_evaluation_is_pointed_at_the_split(script: ModuleType, tmp_path: Path) -> None:
    plans = script.experiments_module().PLANS
    dehaze = script.eval_args(plans["dehaze"], tmp_path, "val", "D")
    assert dehaze[dehaze.index("--subset") + 1] == "recipes/splits/dawn_fog.json:val"
    assert dehaze[dehaze.index("--data") + 1] == "D/dawn_fog"
    cifar = script.eval_args(plans["lowlight-cls"], tmp_path, "test", "D")
    assert cifar[cifar.index("--subset") + 1] == f"{tmp_path / 'split_pools.json'}:test"


@pytest.mark.slow
def test_copy_of_a_run_loads_as_the_fixed_blend(script: ModuleType, shared_data: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, [
        "fit", str(REPO / "recipes" / "lowlight-cls-vat-learn-gateonly.yaml"), f"data.root={shared_data}",
        "train.steps=1", "data.batch_size=2", "train.val_every=0", "val.type=none", "method.nuq_fit=null",
        "method.mixup=none", "train.progress=false", "train.tensorboard=false", "train.device=cpu",
        "train.image_every=0", "--no-report", "--no-html", "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    script.write_copy(str(tmp_path / "run"), 0.25, tmp_path / "copy")
    method = load_inference_model(tmp_path / "copy").method
    x = torch.rand(2, 3, 32, 32)
    restored = method.restore(x).clamp(0, 1)
    torch.testing.assert_close(method.T_A(restored, x), 0.75 * restored + 0.25 * x)
