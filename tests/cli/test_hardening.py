"""The remaining defects of the hardening report, one test each (each failed before its fix)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taskbridge.cli import app, main
from taskbridge.data.io import UMASK, atomic_write_text, save_image
from taskbridge.evaluation.detection import DetectionProtocol


def _main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["taskbridge", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("hw", [(3, 20000), (20000, 3), (1, 1)])
def test_extreme_aspect_ratios_letterbox(hw: tuple[int, int]) -> None:
    """A 3 x 20000 photo used to make the letterbox resize to height 0 and crash."""
    lb, meta = DetectionProtocol().letterbox(torch.rand(3, *hw), 32)
    assert lb.shape[-2] % 32 == 0 and lb.shape[-1] % 32 == 0 and max(lb.shape[-2:]) == 640
    assert meta.orig_size == hw


def test_an_unwritable_output_fails_before_any_work(tmp_path: Path, shared_data: Path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code, err = _main(["restore", "-r", "identity", "--in", str(shared_data / "coco8" / "images" / "val"),
                       "--out", str(blocker / "sub")], monkeypatch, capsys)
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1
    code, err = _main(["evaluate", "--task", "yolov5n", "--data", str(shared_data / "coco8"), "--out", str(blocker)],
                      monkeypatch, capsys)
    assert code == 2 and "exists and is not a folder" in err and len(err.strip().splitlines()) == 1


def test_a_damaged_checkpoint_is_one_line(tmp_path: Path, shared_data: Path, monkeypatch, capsys) -> None:
    from support.engine import tiny_config, tiny_pairs, tiny_registered
    from taskbridge.engine.trainer import Trainer

    with tiny_registered():
        Trainer(tiny_config(tmp_path / "run", steps=1), train_data=tiny_pairs(shared_data)).fit()
        step = tmp_path / "run" / "checkpoints" / "step_0000001"
        model = step / "model.safetensors"
        model.write_bytes(model.read_bytes()[:40])
        argv = ["translate", "--ckpt", str(tmp_path / "run"), "--in", str(shared_data / "coco8" / "images" / "val"),
                "--out", str(tmp_path / "o")]
        code, err = _main(argv, monkeypatch, capsys)
        assert code == 2 and "model.safetensors: cannot be read" in err and len(err.strip().splitlines()) == 1
        (step / "meta.json").write_text("{not json")
        code, err = _main([*argv[:-1], str(tmp_path / "o2")], monkeypatch, capsys)
        assert code == 2 and "meta.json: not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_outputs_get_the_umask_permissions(tmp_path: Path) -> None:
    """mkstemp/mkdtemp made every output 0600 and every checkpoint folder 0700."""
    from support.engine import TinyMethod
    from taskbridge import checkpoint as ckpt

    image = save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    text = atomic_write_text(tmp_path / "b.json", "{}")
    folder = ckpt.save_checkpoint(tmp_path / "c", TinyMethod(), {}, {"step": 1})
    for path, full in ((image, 0o666), (text, 0o666), (folder, 0o777), (folder / "meta.json", 0o666)):
        assert os.stat(path).st_mode & 0o777 == full & ~UMASK, path


def test_evaluate_never_overwrites_results_silently(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["evaluate", "--task", "cifar-resnet20", "--data", str(shared_data / "cifar10_test_subset"), "--limit", "8"]
    for _ in range(2):
        assert runner.invoke(app, base).exit_code == 0
    folders = sorted(p.name for p in (tmp_path / "runs" / "evaluate").iterdir())
    assert folders == ["cifar-resnet20-cifar10_test_subset", "cifar-resnet20-cifar10_test_subset-2"]
    out = tmp_path / "mine"
    assert runner.invoke(app, [*base, "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, [*base, "--out", str(out)])
    assert res.exit_code == 2 and "holds an earlier evaluation" in res.output
    assert runner.invoke(app, [*base, "--out", str(out), "--overwrite"]).exit_code == 0
    assert json.loads((out / "results.json").read_text())["runs"]["input"]["num_images"] == 8


def test_an_empty_folder_is_exit_2_for_every_command(tmp_path: Path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["restore", "-r", "identity", "--in", str(empty), "--out", str(tmp_path / "a")],
                 ["degrade", "--kind", "haze", "--in", str(empty), "--out", str(tmp_path / "b")],
                 ["evaluate-quality", "--pred", str(empty)]):
        code, err = _main(argv, monkeypatch, capsys)
        assert code == 2 and "no images" in err and len(err.strip().splitlines()) == 1, argv


def test_float_tiff_intensities_are_not_divided_by_255(tmp_path: Path) -> None:
    from taskbridge.data.io import read_image

    ramp = (torch.linspace(0, 1, 64).repeat(8, 1)).numpy().astype("float32")
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    Image.fromarray((ramp * 255.0).round(), mode="F").save(tmp_path / "eight_bit.tif")  # integral: 8-bit in floats
    Image.fromarray(ramp * 3.0, mode="F").save(tmp_path / "hdr.tif")
    unit, eight = read_image(tmp_path / "unit.tif"), read_image(tmp_path / "eight_bit.tif")
    assert torch.allclose(unit[0], torch.from_numpy(ramp), atol=1e-6)
    assert (eight[0] - torch.from_numpy(ramp)).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.warns(UserWarning, match="values above 1 are clipped"):
        hdr = read_image(tmp_path / "hdr.tif")
    assert float(hdr.max()) == 1.0 and float(hdr[0, 0, 10]) == pytest.approx(3.0 * float(ramp[0, 10]), abs=1e-6)


@pytest.mark.parametrize("argv, expected", [
    (["restore", "-r", "aodnet", "-s", "wieghts=x", "--in", "{coco}", "--out", "{tmp}/a"], "unknown option(s) wieghts"),
    (["evaluate", "--task", "yolov5n", "--task-opt", "hpy=1", "--data", "{coco}", "--out", "{tmp}/b"], "unknown option(s) hpy"),
    (["evaluate", "--task", "yolov5n", "--data", "{coco}", "--degrade", "haze", "--degrade-opt", "bta=1", "--out", "{tmp}/c"],
     "unknown option(s) bta"),
    (["degrade", "--kind", "haze", "-p", "bta=1", "--in", "{coco}", "--out", "{tmp}/d"], "unknown option(s) bta"),
    (["evaluate-quality", "--pred", "{coco}", "--metrics", "voc-ap"], "not an image-quality metric"),
    (["fit", "{repo}/recipes/smoke.yaml", "method.generator.ngf=abc"], "ngf: must be a valid integer"),
    (["fit", "{repo}/recipes/smoke.yaml", "train.steps=2.5"], "train.steps: must be a valid integer"),
])
def test_option_typos_and_bad_values_are_one_line(argv: list[str], expected: str, tmp_path: Path, shared_data: Path,
                                                  monkeypatch, capsys) -> None:
    repo = Path(__file__).resolve().parents[2]
    subs = {"{coco}": str(shared_data / "coco8" / "images" / "val"), "{tmp}": str(tmp_path), "{repo}": str(repo)}
    argv = [a.replace("{coco}", subs["{coco}"]).replace("{tmp}", subs["{tmp}"]).replace("{repo}", subs["{repo}"])
            for a in argv]
    if argv[0] == "evaluate":
        argv[argv.index("--data") + 1] = str(shared_data / "coco8")
    code, err = _main(argv, monkeypatch, capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
