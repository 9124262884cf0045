"""The official `yolov5n.pt` read without the YOLOv5 code: same weights as the plain re-save, same
detector, and a pickle that asks for anything off the allow-list is refused without running it."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.data.transforms import letterbox
from taskbridge.hub import WeightsLoadError
from taskbridge.tasks.yolov5 import YOLOv5Task, build_yolov5
from taskbridge.tasks.yolov5.official_checkpoint import (
    is_official_checkpoint,
    load_yolov5_state,
    read_official_checkpoint,
)


@pytest.fixture(scope="module")
def official(shared_data: Path) -> Path:
    return shared_data / "yolov5n_coco" / "yolov5n.pt"


@pytest.fixture(scope="module")
def converted(shared_data: Path) -> Path:
    return shared_data / "yolov5n_coco" / "yolov5n_state_dict.pt"


def test_reads_the_same_weights_as_the_converted_file(official: Path, converted: Path) -> None:
    got = read_official_checkpoint(official)
    want = torch.load(converted, map_location="cpu", weights_only=True)
    assert set(got) == {"state_dict", "yaml", "names", "stride"}
    assert list(got["state_dict"]) == list(want["state_dict"])  # same names, same order
    assert len(got["state_dict"]) == 349
    for name, ref in want["state_dict"].items():
        t = got["state_dict"][name]
        assert t.dtype == ref.dtype and t.shape == ref.shape, name
        assert torch.equal(t, ref), name
    assert got["yaml"] == want["yaml"]
    assert got["names"] == want["names"] and len(got["names"]) == 80
    assert got["stride"].dtype == want["stride"].dtype and torch.equal(got["stride"], want["stride"])
    assert is_official_checkpoint(official) and not is_official_checkpoint(converted)


def test_detector_from_official_file_equals_converted(official: Path, converted: Path, shared_data: Path) -> None:
    img = read_image(shared_data / "dawn_fog" / "images" / "foggy-001.jpg")
    x, _ = letterbox(img, 160, auto=False)
    a, b = YOLOv5Task(official), YOLOv5Task(converted)  # the task path routes the official file itself
    assert a.class_names == b.class_names
    with torch.no_grad():
        for ra, rb in zip(a.raw(x[None]), b.raw(x[None]), strict=True):
            assert torch.equal(ra, rb)
    da, db = a.predict(x[None], conf_thres=0.1)[0], b.predict(x[None], conf_thres=0.1)[0]
    assert torch.equal(da.boxes, db.boxes) and torch.equal(da.labels, db.labels)
    assert torch.equal(da.scores, db.scores)
    model, names = build_yolov5(load_yolov5_state(official))
    assert names == b.class_names and isinstance(model, torch.nn.Module)


# --- hand-made checkpoints: fake `models.*` modules so that torch.save can name YOLOv5-like classes ---

class _Attrs:
    """Pickles as NEWOBJ + BUILD(__dict__), like an nn.Module."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def _fake_module(monkeypatch: pytest.MonkeyPatch, module: str, *names: str) -> dict[str, type]:
    pkg = sys.modules.get("models") or types.ModuleType("models")
    monkeypatch.setitem(sys.modules, "models", pkg)
    mod = types.ModuleType(module)
    monkeypatch.setitem(sys.modules, module, mod)
    out = {}
    for name in names:
        cls = type(name, (_Attrs,), {"__module__": module, "__qualname__": name})
        setattr(mod, name, cls)
        out[name] = cls
    return out


def _fake_model(cls: type, weight: torch.Tensor, names: Any) -> Any:
    def module(**kw: Any) -> dict[str, Any]:
        return {"training": False, "_parameters": OrderedDict(kw.get("p", {})), "_buffers": OrderedDict(kw.get("b", {})),
                "_non_persistent_buffers_set": set(kw.get("np", ())), "_modules": OrderedDict(kw.get("m", {}))}
    conv = cls(**module(p={"weight": torch.nn.Parameter(weight), "bias": None},
                        b={"anchors": weight.double(), "grid": torch.zeros(2)}, np=("grid",)))
    seq = cls(**module(m={"0": conv}))
    return cls(**module(m={"model": seq}), yaml={"nc": 1, "anchors": [[1, 2]]}, names=names,
               stride=torch.tensor([8.0, 16.0]))


def test_ema_preferred_and_torch_written_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cls = _fake_module(monkeypatch, "models.yolo", "Model")["Model"]
    ones, zeros = torch.ones(2, 3, dtype=torch.float16), torch.zeros(2, 3, dtype=torch.float16)
    path = tmp_path / "ema.pt"
    torch.save({"model": _fake_model(cls, zeros, ["a"]), "ema": _fake_model(cls, ones, {0: "b"})}, path)
    assert is_official_checkpoint(path)
    got = read_official_checkpoint(path)
    assert list(got["state_dict"]) == ["model.0.weight", "model.0.anchors"]  # None param, non-persistent skipped
    assert torch.equal(got["state_dict"]["model.0.weight"], ones) and got["names"] == ["b"]
    assert got["state_dict"]["model.0.anchors"].dtype == torch.float64
    torch.save({"model": _fake_model(cls, zeros, ["a"]), "ema": None}, path)
    got = read_official_checkpoint(path)
    assert torch.equal(got["state_dict"]["model.0.weight"], zeros) and got["names"] == ["a"]


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _assert_refused(path: Path, global_name: str) -> str:
    with pytest.raises(WeightsLoadError) as info:
        read_official_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and f"'{global_name}'" in msg, msg
    return msg


def test_os_system_is_refused_without_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _System(marker)}, path)
    _assert_refused(path, f"{os.system.__module__}.system")
    assert not marker.exists()
    # Looking like an official checkpoint routes it to the restricted reader, which still refuses.
    cls = _fake_module(monkeypatch, "models.yolo", "Model")["Model"]
    torch.save({"model": cls(), "payload": _System(marker)}, path)
    assert is_official_checkpoint(path)
    with pytest.raises(WeightsLoadError, match="system"):
        YOLOv5Task(path)
    assert not marker.exists()


def test_unknown_class_and_builtins_eval_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    evil = _fake_module(monkeypatch, "models.common", "EvilLayer")["EvilLayer"]
    path = tmp_path / "unknown.pt"
    torch.save({"model": evil()}, path)
    _assert_refused(path, "models.common.EvilLayer")
    # A protocol-4 pickle (STACK_GLOBAL) asking for builtins.eval, in a hand-built torch-style zip.
    marker = tmp_path / "pwned2"

    class Eval:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return eval, (f"open({str(marker)!r}, 'w')",)

    path = tmp_path / "eval.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"model": Eval()}, protocol=4))
        zf.writestr("archive/version", "3\n")
    _assert_refused(path, "builtins.eval")
    assert not marker.exists()


def test_truncated_or_corrupt_file_is_one_line_error(official: Path, tmp_path: Path) -> None:
    data = official.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsLoadError) as info:
        read_official_checkpoint(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    # One flipped byte inside a tensor record: the zip's CRC check catches it.
    corrupt = tmp_path / "corrupt.pt"
    shutil.copyfile(official, corrupt)
    with zipfile.ZipFile(official) as zf:
        info_ = zf.getinfo("archive/data/0")
    raw = bytearray(data)
    name_len, extra_len = struct.unpack("<HH", raw[info_.header_offset + 26: info_.header_offset + 30])
    start = info_.header_offset + 30 + name_len + extra_len
    raw[start + 5] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(WeightsLoadError, match="CRC") as info:
        read_official_checkpoint(corrupt)
    assert "\n" not in str(info.value) and str(corrupt) in str(info.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(WeightsLoadError, match="garbage.pt"):
        read_official_checkpoint(garbage)
