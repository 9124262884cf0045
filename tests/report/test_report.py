"""`taskbridge report` and the page `fit` writes at the end: curves, image grids, recipe, environment,
and clear one-line errors (or a page with a note) for folders that are not runs or runs that are damaged."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from taskbridge.cli import app
from taskbridge.report import collect, write_fit_report, write_report
from taskbridge.report.collect import RunSummary
from taskbridge.report.html import arrange, png_size, render
from taskbridge.report.runinfo import record_session

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, str]:
    """recipes/smoke.yaml as shipped (5 CycleGAN steps, grids at steps 1 and 5), through the CLI."""
    run = tmp_path_factory.mktemp("report") / "run"
    res = runner.invoke(app, ["fit", str(REPO / "recipes" / "smoke.yaml"), f"data.root={shared_data}",
                              "train.progress=false", "train.tensorboard=false", "-o", str(run)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return run, res.output


def images_of(page: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for b64, alt in IMG.findall(page):
        out.setdefault(alt, []).append(base64.b64decode(b64))
    return out


def one_line_error(output: str, *needles: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output and all(n in lines[0] for n in needles), output


def test_fit_writes_a_self_contained_report(smoke_run: tuple[Path, str]) -> None:
    run, output = smoke_run
    page_path = run / "report.html"
    assert f"report: {page_path}" in output
    page = page_path.read_text()
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing external
    imgs = images_of(page)
    (loss,) = imgs["loss/*"]  # one curve per group: losses, the method's own terms, learning rates
    assert {"G/*", "D/*", "lr/*"} <= set(imgs)
    size = png_size(loss)
    assert size is not None and size[0] >= 300 and size[1] >= 150 and len(loss) > 5_000
    for step in (1, 5):  # the grids of every image step, real/fake/rec side by side
        assert f"<summary>step {step}</summary>" in page
    for name in ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"):
        assert len(imgs[name]) == 2 and all(png_size(b) is not None for b in imgs[name])
    assert page.index("<summary>step 5</summary>") < page.index("<summary>step 1</summary>")  # newest first
    assert "type: cyclegan" in page and "ngf: 8" in page  # the recorded recipe
    import torch

    info = json.loads((run / "run_info.json").read_text())
    assert info["environment"]["torch"] == torch.__version__ and info["environment"]["device"] == "cpu"
    (session,) = info["sessions"]
    assert session["first_step"] == 0 and session["last_step"] == 5 and session["steps_per_s"] > 0
    assert torch.__version__ in page and "steps/s" in page and "Gate (VaT)" not in page


def test_report_command_writes_elsewhere_and_leaves_the_run_alone(smoke_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = smoke_run
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}
    out = tmp_path / "other.html"
    res = runner.invoke(app, ["report", str(run), "-o", str(out)])
    assert res.exit_code == 0 and res.output.strip() == str(out), res.output
    assert "loss/*" in images_of(out.read_text())
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()} == digest
    res = runner.invoke(app, ["report", str(run), "-o", str(run / "metrics.jsonl")])  # never over an input
    assert res.exit_code == 2
    one_line_error(res.output, "metrics.jsonl", ".html")
    assert hashlib.sha256((run / "metrics.jsonl").read_bytes()).hexdigest() == digest[run / "metrics.jsonl"]


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "photos")])
    assert res.exit_code == 2
    one_line_error(res.output, str(tmp_path / "photos"), "metrics.jsonl", "checkpoints/")
    res = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2
    one_line_error(res.output, str(tmp_path / "missing"), "no such folder")
    assert not list(tmp_path.rglob("*.html"))


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_metrics_give_a_page_with_a_note(smoke_run: tuple[Path, str], tmp_path: Path, damage: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run, ignore=shutil.ignore_patterns("report.html"))
    metrics = run / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 40] if damage == "truncated" else "")  # a crash mid-write / before any log
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    page = (run / "report.html").read_text()
    note = "1 unreadable line(s) skipped" if damage == "truncated" else "holds no readable rows"
    assert note in page and "type: cyclegan" in page  # the rest of the page is still there
    assert ("loss/*" in images_of(page)) == (damage == "truncated")


def _png(path: Path, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size * 4, size), (90, 120, 200)).save(path)


def test_gate_section_from_recorded_statistics(tmp_path: Path) -> None:
    """A VaT run: the gate over validation (when recorded) and over the training logs, plus the gate maps."""
    run = tmp_path / "vat"
    rows = [{"step": s, "kind": "train", "loss/translator": 1.0 / s, "gate/mean": 0.5 - 0.01 * s, "drift/gate": 0.001 * s}
            for s in range(1, 5)]
    rows += [{"step": 2, "kind": "val", "val/top1": 0.8, "val/gate_mean": 0.44, "val/num_images": 10.0},
             {"step": 4, "kind": "val", "val/top1": 0.82, "val/gate_mean": 0.40, "val/num_images": 10.0}]
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("degraded", "restored", "gate", "fused", "translated"):
        _png(run / "images" / f"step_0000004_{name}.png")
    page = render(collect(run))
    gate = page[page.index("<h2 id='gate'>"):page.index("<h2 id='images'>")]
    assert "Over the validation split" in gate and "val/gate_mean" in gate and "0.42" in gate  # mean of 0.44, 0.40
    assert "gate/mean" in gate and "0.47" in gate and "drift/gate" in gate  # gate/mean mean over the logs: 0.475
    assert "gate, step 4" in gate
    assert "val/num_images" not in page  # counts are not drawn as curves
    rows = [r for r in rows if "val/gate_mean" not in r]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "scripts/vat_gate_stats.py" in render(collect(run))  # not recorded: said so, with where to get it


def test_image_rows_and_step_limit(tmp_path: Path) -> None:
    assert arrange(["rec_B", "fake_A", "real_A", "rec_A", "real_B", "fake_B"]) == [
        ["real_A", "fake_B", "rec_A"], ["real_B", "fake_A", "rec_B"]]
    assert arrange(["translated", "gate", "degraded", "restored"]) == [["degraded", "restored", "gate", "translated"]]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "kind": "train", "loss/G": 1.0}) + "\n")
    for s in range(1, 31):
        _png(run / "images" / f"step_{s:07d}_fake_B.png")
    page = render(collect(run), max_image_steps=4)
    assert re.findall(r"<summary>step (\d+)</summary>", page) == ["30", "29", "28", "1"]
    assert "26 older image step(s) left out" in page


def test_sessions_and_a_failing_report_never_lose_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    record_session(tmp_path, started=time.time() - 2, first_step=0, last_step=10)
    record_session(tmp_path, started=time.time() - 1, first_step=10, last_step=20, resumed_from="x")
    assert [s["last_step"] for s in json.loads((tmp_path / "run_info.json").read_text())["sessions"]] == [10, 20]
    record_session(tmp_path, started=time.time() - 1, first_step=0, last_step=5)  # a fresh start: a new list
    assert [s["last_step"] for s in json.loads((tmp_path / "run_info.json").read_text())["sessions"]] == [5]

    import taskbridge.report as report

    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    trainer = SimpleNamespace(output_dir=tmp_path, device="cpu", dist=SimpleNamespace(world_size=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_fit_report(trainer, {"step": 5, "resumed_from": None}, time.time()) is None
    assert any("run report not written" in str(w.message) and "disk full" in str(w.message) for w in caught)


def test_summary_of_a_run_without_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "kind": "train", "loss/G": "nan"}\n')
    s = collect(tmp_path)
    assert isinstance(s, RunSummary) and s.config is None and s.last_step == 1
    path = write_report(tmp_path)
    assert path == tmp_path / "report.html" and "Not recorded (no readable checkpoint)" in path.read_text()


def test_tiny_vat_run_shows_its_gate(shared_data: Path, tmp_path: Path) -> None:
    """Two CPU steps of the low-light classification VaT recipe (no NUQ, no validation: about 5 s)."""
    run = tmp_path / "vat"
    res = runner.invoke(app, ["fit", str(REPO / "recipes" / "lowlight-cls-vat.yaml"), f"data.root={shared_data}",
                              "train.steps=2", "data.batch_size=2", "train.image_every=2", "train.val_every=0",
                              "val.type=none", "method.use_mle=false", "method.nuq_fit=null", "method.mixup=none",
                              "train.progress=false", "train.tensorboard=false", "train.device=cpu", "-o", str(run)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    page = (run / "report.html").read_text()
    gate = page[page.index("<h2 id='gate'>"):page.index("<h2 id='images'>")]
    assert "<td>gate/mean</td>" in gate and "<td>drift/gate</td>" in gate
    assert "scripts/vat_gate_stats.py" in gate  # validation did not record the gate: said so
    assert "gate, step 2" in images_of(gate)
    assert {"gate/*", "drift/*", "loss/*"} <= set(images_of(page)) and "type: vat" in page


def test_resumed_run_gets_its_page_when_keep_last_pruned_the_resume_checkpoint(shared_data: Path, tmp_path: Path) -> None:
    """The session's first step comes from the trainer, not from the checkpoint it resumed from (gone by then)."""
    run = tmp_path / "run"
    common = [f"data.root={shared_data}", "train.progress=false", "train.tensorboard=false", "train.image_every=0",
              "train.ckpt_every=1", "train.keep_last=1", "-o", str(run)]
    res = runner.invoke(app, ["fit", str(REPO / "recipes" / "smoke.yaml"), "train.steps=2", *common])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "run report not written" would fail here
        res = runner.invoke(app, ["fit", str(REPO / "recipes" / "smoke.yaml"), "train.steps=4", *common,
                                  "--resume", "auto"])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    assert not (run / "checkpoints" / "step_0000002").exists()  # pruned: the case that lost the page
    assert f"report: {run / 'report.html'}" in res.output
    sessions = json.loads((run / "run_info.json").read_text())["sessions"]
    assert [(s["first_step"], s["last_step"]) for s in sessions] == [(0, 2), (2, 4)]
