"""`taskbridge bench`: the tiny-size CI run, FLOPs against hand counts, skipped sizes and bad options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskbridge.cli import app


def resnet_generator_flops(size: int, ngf: int = 64, n_blocks: int = 9) -> int:
    """Hand count of the default CycleGAN ResNet generator: 2 FLOPs per multiply-add of each conv."""
    s2, s4 = (size // 2) ** 2, (size // 4) ** 2
    macs = (3 * ngf * 49 * size**2  # 7x7 in
            + ngf * 2 * ngf * 9 * s2 + 2 * ngf * 4 * ngf * 9 * s4  # two stride-2 downsamplings
            + n_blocks * 2 * (4 * ngf) ** 2 * 9 * s4  # residual blocks, two 3x3 convs each
            + 4 * ngf * 2 * ngf * 9 * s4 + 2 * ngf * ngf * 9 * s2  # two transposed convs (per input pixel)
            + ngf * 3 * 49 * size**2)  # 7x7 out
    return 2 * macs


def test_tiny_bench_run_writes_json(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--sizes", "32", "--iters", "1", "--warmup", "0", "--threads", "1",
                                   "--translators", "resnet-generator,vat", "--methods", "lowlight-cls-vat",
                                   "--device", "cpu", "--no-progress", "--json", str(out)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    doc = json.loads(out.read_text())
    env = doc["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == 1 and env["device"] == "cpu" and env["memory"]
    rows = {(r["kind"], r["name"], r["size"]): r for r in doc["rows"]}
    assert set(rows) == {(k, n, s) for k, n in [("translator", "resnet-generator"), ("translator", "vat"),
                                                 ("method", "vat")] for s in (32,)}
    for r in doc["rows"]:
        assert r["skipped"] is None, r
        assert r["params"] > 0 and r["flops"] > 0 and r["images_per_s"] > 0 and r["peak_mb"] > 0, r
        if r["kind"] == "method":
            assert r["steps_per_s"] > 0 and 0 < r["trainable"] < r["params"]  # frozen restorer and classifier
            assert r["recipe"].endswith("lowlight-cls-vat.yaml")
    # FlopCounterMode on a known conv net equals the hand count
    assert rows["translator", "resnet-generator", 32]["flops"] == resnet_generator_flops(32)
    assert "resnet-generator" in res.output and "lowlight-cls-vat" in res.output  # the table


def test_grouped_conv_backward_flops_are_corrected() -> None:
    """A depthwise conv's backward costs its forward twice (input and weight gradient), as for a dense one;
    torch's own formula counts the weight gradient as if the conv were dense."""
    from taskbridge.bench import count_flops

    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
    x = torch.rand(2, 16, 8, 8, requires_grad=True)
    forward = count_flops(lambda: conv(x))
    assert forward == 2 * 2 * 16 * 9 * 64
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_a_failing_flop_count_loses_only_the_count() -> None:
    """FlopCounterMode's module tracker trips on a no-grad view of a trainable parameter; the call still runs."""
    from taskbridge.bench import first_call

    class View(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4))

        def forward(self) -> torch.Tensor:
            return self.w.view(2, 2)

    calls = []
    net = View()

    def call() -> None:
        with torch.no_grad():
            calls.append(net())

    flops, note = first_call(call)
    assert flops is None and note.startswith("FLOPs not counted") and len(calls) >= 1


def test_sizes_a_network_cannot_take_are_skipped_rows() -> None:
    from taskbridge.bench import Settings, bench_translator

    rows = list(bench_translator("resnet-generator", Settings(sizes=[8, 30, 64], iters=1, warmup=0)))
    assert [r.size for r in rows] == [8, 30, 64]
    assert "min_size 16" in rows[0].skipped and "size_multiple 4" in rows[1].skipped
    assert all(r.images_per_s is None and r.flops is None and r.params for r in rows[:2])
    assert rows[2].skipped is None and rows[2].flops == resnet_generator_flops(64)  # 4x the 32 px count


@pytest.mark.parametrize(("argv", "expected"), [
    (["--translators", "nope"], "unknown translator 'nope'"),
    (["--methods", "nope"], "'nope' is neither a registered method"),
    (["--sizes", "0"], "--sizes: '0'"),
    (["--only", "losses"], "--only must be one of translators, methods"),
])
def test_bad_options_are_one_line(argv: list[str], expected: str, monkeypatch, capsys) -> None:
    from taskbridge.cli import main

    monkeypatch.setattr(sys, "argv", ["taskbridge", "bench", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
