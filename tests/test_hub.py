"""Weights by name: resolution, checksums, no code execution on load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from taskbridge import hub


def test_hub_resolves_shared_weights_and_checks_sha(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(shared_data))
    path = hub.resolve("sci-medium", download=False)
    assert path.name == "medium.pt"
    state = hub.load_state("sci-medium", download=False)
    assert any(k.startswith("enhance.") for k in state)
    # a corrupted copy earlier on the search path is refused, naming the file
    bad = tmp_path / "medium.pt"
    bad.write_bytes(b"not the weights")
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", f"{tmp_path}:{shared_data}")
    with pytest.raises(hub.ChecksumError, match="medium.pt"):
        hub.resolve("sci-medium", download=False)


def test_hub_missing_weights_says_where_to_put_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(hub.WeightsNotFoundError, match="Place 'yolov5n_state_dict.pt'"):
        hub.resolve("yolov5n-coco")
    with pytest.raises(hub.WeightsNotFoundError, match="Downloads are disabled"):
        hub.resolve("aodnet", download=False)


def test_hub_registered_sha256_match_shared_files(shared_data: Path) -> None:
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        path = shared_data / spec.subdir / spec.filename
        assert path.is_file(), f"{name}: {path} missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256, name


def test_load_state_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        hub.load_state(p)
