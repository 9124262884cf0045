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
    with pytest.raises(hub.WeightsNotFoundError, match="Place 'yolov5n_state_dict.pt'.*no download URL|No download URL"):
        hub.resolve("yolov5n-coco-converted")
    with pytest.raises(hub.WeightsNotFoundError, match="Place 'yolov5n.pt'"):
        hub.resolve("yolov5n-coco", download=False)
    with pytest.raises(hub.WeightsNotFoundError, match="Downloads are disabled"):
        hub.resolve("aodnet", download=False)


def test_hub_registered_sha256_match_shared_files(shared_data: Path) -> None:
    """Every entry with a declared sha256 ships in the shared data; entries without one (a user download
    whose full hash no trustworthy source publishes) declare the publisher's prefix and a URL instead."""
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        if not spec.sha256:
            assert spec.url, name
            if spec.sha256_prefix:
                assert len(spec.sha256_prefix) >= 8 and spec.url.endswith(f"-{spec.sha256_prefix}.pth"), name
            else:  # nothing published at all (GFP-GAN's release assets): pinned on first use, and the docs say so
                assert "pinned on first use" in spec.notes, name
                assert spec.filename in (Path(__file__).parents[1] / "docs" / "weights.md").read_text(), name
            continue
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


def test_hash_pinned_on_first_use_then_enforced(tmp_path, monkeypatch) -> None:
    """Weights whose full sha256 no trustworthy source publishes: the first file seen is pinned, a different
    file later is refused naming the pin."""
    from taskbridge import hub

    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    spec = hub.WeightSpec(name="pin-demo", filename="pin.pt", sha256="", license="test", architecture="test")
    monkeypatch.setitem(hub._SPECS, "pin-demo", spec)
    (tmp_path / "pin.pt").write_bytes(b"first")
    assert hub.resolve("pin-demo") == tmp_path / "pin.pt"
    assert hub.resolve("pin-demo") == tmp_path / "pin.pt"  # same file: accepted again
    assert "pin-demo" in hub.pins_file().read_text()
    (tmp_path / "pin.pt").write_bytes(b"second")
    with pytest.raises(hub.ChecksumError, match="pinned for 'pin-demo' when it was first used"):
        hub.resolve("pin-demo")


def test_a_download_is_checked_before_it_enters_the_cache(tmp_path, monkeypatch) -> None:
    from taskbridge import hub

    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TASKBRIDGE_OFFLINE", raising=False)  # the transfer below is faked: nothing leaves the machine
    from taskbridge.fetch import download

    def fake_transfer(url, part, size, timeout, bar) -> None:  # the server's bytes: b"x"
        Path(part).write_bytes(b"x")

    monkeypatch.setattr(download, "_transfer", fake_transfer)
    good = hashlib.sha256(b"x").hexdigest()
    for sha, prefix, ok in (("0" * 64, "", False), ("", "ffffffff", False), (good, "", True), ("", good[:8], True)):
        spec = hub.WeightSpec(name=f"dl-{sha[:4]}{prefix}", filename=f"dl-{sha[:4]}{prefix}.pt", sha256=sha,
                              sha256_prefix=prefix, license="test", architecture="test", url="http://127.0.0.1/x")
        monkeypatch.setitem(hub._SPECS, spec.name, spec)
        if ok:
            assert hub.resolve(spec.name).read_bytes() == b"x"
        else:
            with pytest.raises(hub.ChecksumError, match="http://127.0.0.1/x: .*(sha256.*nothing placed|nothing placed.*sha256)"):
                hub.resolve(spec.name)
            assert not (hub.cache_dir() / spec.filename).exists() and not list(hub.cache_dir().glob("*.part"))


def test_weights_default_to_shared_data_from_the_working_directory(shared_data: Path, tmp_path, monkeypatch) -> None:
    """Without $TASKBRIDGE_WEIGHTS, ../shared/data (the project's layout) is searched before the cache."""
    work = tmp_path / "ws"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    monkeypatch.chdir(work)
    monkeypatch.delenv("TASKBRIDGE_WEIGHTS", raising=False)
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    assert hub.resolve("sci-easy", download=False).resolve() == (shared_data / "sci_weights" / "easy.pt").resolve()
    assert hub.resolve("yolov5n-coco", download=False).name == "yolov5n.pt"
