"""scripts/vat_constant_gate.py: the copy is exactly the fixed blend, and is scored on the split asked for."""

from __future__ import annotations

import subprocess
import sys
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
    dehaze = script.on_split(plans["dehaze"], "val")["eval"]
    assert dehaze[dehaze.index("--subset") + 1] == "recipes/splits/dawn_fog.json:val"
    assert dehaze[dehaze.index("--data") + 1] == "{data}/dawn_fog"  # filled in by vat_experiments.evaluate
    cifar = script.on_split(plans["lowlight-cls"], "test")["eval"]
    assert cifar[cifar.index("--subset") + 1] == "{split}:test"
    assert plans["dehaze"]["eval"][plans["dehaze"]["eval"].index("--subset") + 1].endswith(":test")  # plan untouched


@pytest.mark.parametrize(("argv", "says"), [
    (["dehaze", "{tmp}/no-run"], "{tmp}/no-run: no checkpoint found"),
    (["dehaze", "{tmp}/no-run", "--gates", "0.5", "1.5"], "--gates must lie in [0, 1]"),
])
def test_bad_input_is_one_line_without_a_traceback(tmp_path: Path, argv: list[str], says: str) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), *(a.format(tmp=tmp_path) for a in argv)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert says.format(tmp=tmp_path) in res.stderr
    assert not (tmp_path / "no-run").exists()  # nothing written for a run that is not there


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
