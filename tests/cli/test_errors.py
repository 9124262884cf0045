"""User errors on the command line are one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("case", ["missing weights", "missing folder"])
def test_cli_user_errors_are_one_clear_line(case: str, shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from taskbridge.cli import main

    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    if case == "missing weights":  # downloads are off in the tests (conftest): no network is touched
        argv = ["evaluate", "--task", "yolov5n", "--data", str(shared_data / "coco8"), "--out", str(tmp_path / "o")]
        expected = "taskbridge fetch yolov5n-coco"
    else:
        argv = ["restore", "--restorer", "identity", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
        expected = "nope"
    monkeypatch.setattr(sys, "argv", ["taskbridge", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and "Traceback" not in err
