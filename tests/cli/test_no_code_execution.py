"""Nothing taskbridge opens runs code unless the user says --trust-pickle; a run's config never grants it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taskbridge.cli import app, main
from taskbridge.hub import UntrustedPickleError, load_state, trusting_pickles
from taskbridge.registry import TASKS


class Payload:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, path)
    return path, marker


def _run_naming(tmp_path: Path, weights: Path, trust_in_config: bool) -> Path:
    """A run folder whose recorded recipe names the ultralytics task with a pickled checkpoint."""
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    task = {"type": "ultralytics", "weights": str(weights)}
    if trust_in_config:
        task["trust_pickle"] = True  # not an option of the task: a config cannot grant trust
    meta = {"format": 1, "step": 1, "config": {"method": {"type": "vat", "task": task}}, "model_extra": {}, "state": {}}
    (ckpt / "meta.json").write_text(json.dumps(meta))
    for f in ("model.safetensors", "state.safetensors"):
        (ckpt / f).write_bytes(b"")
    return tmp_path / "run"


def test_the_task_refuses_a_pickle_without_trust(evil) -> None:
    path, marker = evil
    with pytest.raises(UntrustedPickleError, match=r"evil.pt: an ultralytics checkpoint is a pickle.*--trust-pickle"):
        TASKS.create("ultralytics", weights=str(path))
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_state(path)  # the weights hub never unpickles code either
    assert not marker.exists()


@pytest.mark.parametrize("trust_in_config", [False, True])
@pytest.mark.parametrize("command", ["evaluate", "translate"])
def test_a_run_cannot_make_taskbridge_run_its_code(command: str, trust_in_config: bool, evil, tmp_path: Path,
                                                   shared_data: Path, monkeypatch, capsys) -> None:
    path, marker = evil
    run = _run_naming(tmp_path, path, trust_in_config)
    if command == "evaluate":
        argv = ["evaluate", "--task", "yolov5n", "--data", str(shared_data / "dawn_fog"), "--limit", "1",
                "--translator", str(run), "--out", str(tmp_path / "o")]
    else:
        argv = ["translate", "--ckpt", str(run), "--in", str(shared_data / "coco8" / "images" / "val"),
                "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["taskbridge", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("--trust-pickle" in err) if not trust_in_config else ("trust_pickle" in err)
    assert not marker.exists(), "the payload ran"


def test_trust_is_given_by_name_only(evil, monkeypatch) -> None:
    import taskbridge.tasks.ultralytics_detector as adapter

    def loader_reached():  # stands in for ultralytics (never imported here: it patches globals on import)
        raise LookupError("the loader was reached")

    path, marker = evil
    monkeypatch.setattr(adapter, "_ultralytics", loader_reached)
    with trusting_pickles(), pytest.raises(LookupError, match="loader was reached"):  # what --trust-pickle does
        TASKS.create("ultralytics", weights=str(path))
    with pytest.raises(UntrustedPickleError):
        TASKS.create("ultralytics", weights=str(path))  # and the trust ends with the command
    res = CliRunner().invoke(app, ["evaluate", "--help"])
    assert "--trust-pickle" in res.output
