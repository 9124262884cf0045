"""`taskbridge align-faces` on real photos: aligned crops, the landmarks record, a seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.cli.faces_cmd import assign_split
from taskbridge.data.io import read_image
from taskbridge.faces.align import template


def test_align_faces_writes_aligned_crops_and_landmarks(tmp_path: Path, shared_data: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    names = [f"fairface_000{i}.jpg" for i in range(1, 5)]
    for name in names:
        (src / name).write_bytes((shared_data / "faces_fairface" / "images" / name).read_bytes())
    (src / "empty.png").write_bytes(b"")  # unreadable: skipped, named
    out = tmp_path / "aligned"
    result = CliRunner().invoke(app, ["align-faces", "--in", str(src), "--out", str(out), "--size", "64",
                                      "--split", "train=0.5,test=0.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "faces.json").read_text())
    assert len(report["faces"]) == 4 and len(report["skipped"]) == 1
    parts = {r["part"] for r in report["faces"].values()}
    assert parts == {"train", "test"}
    for rel, record in report["faces"].items():
        assert read_image(out / rel).shape == (3, 64, 64)
        assert torch.allclose(torch.tensor(record["landmarks"]), template(64), atol=6.0)  # 5-point fit residual


def test_split_is_seeded_by_path_and_complete(tmp_path: Path) -> None:
    files = [tmp_path / f"{i:03d}.jpg" for i in range(50)]
    a = assign_split(files, tmp_path, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    b = assign_split(list(reversed(files)), tmp_path, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    c = assign_split(files, tmp_path, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert a == b and a != c and set(a) == set(files)
    assert [list(a.values()).count(p) for p in ("train", "val", "test")] == [40, 5, 5]
