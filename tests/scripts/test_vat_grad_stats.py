"""scripts/vat_grad_stats.py: per-term gradient signal and noise on VaT's translator parts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vat_grad_stats.py"


def test_summary_tells_a_common_direction_from_noise(script: ModuleType) -> None:
    grad_stats = script
    g = torch.randn(50)
    same = grad_stats.summarise([g, g, g, g])
    assert same["sign_agreement"] == 1.0 and same["noise"] == 0.0 and same["batches_for_snr1"] == 0.0
    assert same["signal"] == pytest.approx(float(g.norm()), rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    noise = grad_stats.summarise([torch.randn(4000, generator=gen) for _ in range(16)])
    floor = math.sqrt(2 / (math.pi * 16))
    assert noise["sign_agreement"] == pytest.approx(floor, rel=0.05)  # no direction: the printed floor
    assert noise["batches_for_snr1"] > 100  # the mean of 16 is ~1/4 of one batch's norm, all of it noise
    zero = grad_stats.summarise([torch.zeros(5), torch.zeros(5)])
    assert zero["signal"] == 0 and math.isinf(zero["batches_for_snr1"]) and zero["sign_agreement"] == 0


def _run(grad_stats: ModuleType, shared_data: Path, tmp_path: Path, out_init_std: float) -> dict:
    out = tmp_path / f"std{out_init_std}.json"
    rc = grad_stats.main([
        str(REPO / "recipes" / "lowlight-cls-vat.yaml"), f"data.root={shared_data}", "data.batch_size=4",
        "method.nuq_fit=null", "method.mixup=none", "train.device=cpu",
        f"method.translator={{type: vat, width: 8, global_residual: true, out_init_std: {out_init_std}}}",
        "--batches", "2", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_the_cycle_term_is_silent_at_the_identity_and_pulls_back_next_to_it(script: ModuleType, shared_data: Path,
                                                                            tmp_path: Path) -> None:
    """At the exact identity start the cycle loss has zero gradient on T_A's transformation module;
    a small-noise start next to it gets a consistent pull back (the L1 cycle's gradient does not shrink
    with the distance), while the task flows still reach the module."""
    exact = _run(script, shared_data, tmp_path, 0.0)["stats"]
    assert exact["cycle"]["transform"]["norm"] == 0.0 and math.isinf(exact["cycle"]["transform"]["batches_for_snr1"])
    assert exact["translation"]["transform"]["norm"] > 0 and exact["hq"]["transform"]["norm"] > 0
    assert exact["fusion"]["gate"]["norm"] > 0 and exact["fusion"]["transform"]["norm"] == 0  # fusion: the gate only
    near = _run(script, shared_data, tmp_path, 1e-3)["stats"]
    assert near["cycle"]["transform"]["norm"] > 0 and near["cycle"]["transform"]["sign_agreement"] > 0.8


@pytest.mark.slow
def test_the_feature_term_reaches_the_gate_and_t_and_terms_can_be_chosen(script: ModuleType, shared_data: Path,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """method.feature_align adds a `feature` term (gate and T, never T_B); --terms measures only the named
    terms and refuses one the recipe's objective lacks."""
    grad_stats = script
    out = tmp_path / "feature.json"
    common = [str(REPO / "recipes" / "lowlight-cls-vat.yaml"), f"data.root={shared_data}", "data.batch_size=4",
              "method.nuq_fit.max_images=16", "method.mixup=none", "train.device=cpu",
              "method.translator={type: vat, width: 8, global_residual: true, out_init_std: 1.0e-3}"]
    assert grad_stats.main([*common, "method.feature_align=1.0", "--terms", "feature", "--batches", "2",
                            "--json", str(out)]) == 0
    stats = json.loads(out.read_text())["stats"]
    assert set(stats) == {"feature", "all"}
    assert stats["feature"]["gate"]["norm"] > 0 and stats["feature"]["transform"]["norm"] > 0
    assert stats["feature"]["backward"]["norm"] == 0
    assert grad_stats.main([*common, "--terms", "feature", "--batches", "2"]) == 2
    assert "--terms feature: not part of this recipe's objective" in capsys.readouterr().err
