"""benchmarks/bench_inference.py: the inference path it counts is the one `translate` uses, counted exactly."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("bench_inference")

SMALL_CUT = ["method.generator.ngf=8", "method.generator.n_blocks=2", "method.nce_layers=[pad_in,block1]"]


def direct_flops(module: torch.nn.Module, *args: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(*args)
    return fc.get_total_flops()


def test_cut_recipe_counts_generator_only(tmp_path: Path) -> None:
    recipe = str(ROOT / "recipes/compare/cut-dehaze-det.yaml")
    out = tmp_path / "rows.json"
    bench.main(["--recipes", recipe, "--set", *SMALL_CUT, "--sizes", "32", "--iters", "1", "--warmup", "0",
                "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    method, name = bench.method_from_recipe(recipe, SMALL_CUT)
    assert row["method"] == name == "cut-dehaze-det-160"
    assert row["translator_modules"] == ["G"] and row["frozen_modules"] == []
    assert row["translator_params"] == sum(p.numel() for p in method.G.parameters())  # D and heads left out
    flops = direct_flops(method.G, torch.rand(1, 3, 32, 32))
    assert flops > 0 and row["flops"] == row["translator_flops"] == flops
    assert row["restorer_params"] is None and row["img_per_s"] > 0
    table = bench.markdown([row], bench.environment(), 1, 0)
    assert "| cut-dehaze-det-160 (G) |" in table and "GFLOPs/img @32" in table


def test_cyclegan_counts_forward_generator_not_both() -> None:
    method, _ = bench.method_from_recipe(str(ROOT / "recipes/compare/cyclegan-dehaze-det.yaml"),
                                         ["method.generator.ngf=8", "method.generator.n_blocks=2"])
    row = bench.measure(method, "cyclegan", 32, iters=1, warmup=0)
    assert row["translator_modules"] == ["G_A"]  # G_B is in inference_modules but translate never calls it
    assert row["translator_params"] == sum(p.numel() for p in method.G_A.parameters())
    assert row["flops"] == direct_flops(method.G_A, torch.rand(1, 3, 32, 32))


@pytest.mark.usefixtures("shared_data")
def test_vat_splits_restorer_and_translator() -> None:
    method, _ = bench.method_from_recipe(str(ROOT / "recipes/dehaze-det-vat.yaml"), ["method.translator.width=4"])
    row = bench.measure(method, "vat", 32, iters=1, warmup=0)
    assert row["translator_modules"] == ["T_A"] and row["frozen_modules"] == ["restorer"]
    assert row["translator_params"] == sum(p.numel() for p in method.T_A.parameters())  # T_B left out
    assert row["restorer_params"] == sum(p.numel() for p in method.restorer.parameters()) > 0
    x = torch.rand(1, 3, 32, 32)
    restorer_flops = direct_flops(method.restorer, x)
    assert row["restorer_flops"] == restorer_flops > 0
    assert row["translator_flops"] == direct_flops(method.T_A, method.restore(x), x) > 0
    assert row["flops"] == row["translator_flops"] + restorer_flops
