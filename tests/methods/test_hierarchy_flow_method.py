"""Hierarchy Flow as a method: every trainable parameter gets a gradient, the default style is the
running mean of domain B's codes, a 5-step CPU fit on real photos, and `taskbridge translate` with and
without --reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from support.engine import write_image_folders
from taskbridge.cli import app
from taskbridge.data.io import read_image
from taskbridge.registry import METHODS

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
TINY = {"translator": {"type": "hierarchy-flow", "expansions": [4, 2], "pad_size": 2}}


def test_one_step_reaches_every_parameter_and_tracks_the_style_mean() -> None:
    m = METHODS.create("hierarchy-flow", **TINY)
    batch = {"A": torch.rand(2, 3, 24, 24), "B": torch.rand(2, 3, 24, 24)}
    out = m.training_step(batch, 0)
    assert set(out) >= {"loss/G", "G/content", "G/style"} and torch.isfinite(out["loss/G"])
    out["loss/G"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.optim_groups()["G"])
    assert not any(p.requires_grad for p in m.features.parameters())
    code = m.net.style_code(batch["B"]).mean(0)
    assert int(m.style_seen) == 1 and torch.allclose(m.style_mean, code, atol=1e-6)
    m.training_step({"A": batch["A"], "B": batch["B"].flip(-1)}, 1)
    assert int(m.style_seen) == 2  # exact running mean for the first 1 / (1 - momentum) batches
    assert torch.allclose(m.style_mean, (code + m.net.style_code(batch["B"].flip(-1)).mean(0)) / 2, atol=1e-5)


def test_translate_default_style_and_reference() -> None:
    m = METHODS.create("hierarchy-flow", **TINY).eval()
    x = torch.rand(1, 3, 20, 28)
    with pytest.raises(ValueError, match="seen no style image yet.*--reference"):
        m.translate(x)
    m.training_step({"A": torch.rand(1, 3, 24, 24), "B": torch.rand(1, 3, 24, 24)}, 0)
    with torch.no_grad():
        plain, styled = m.translate(x), m.translate(x, torch.rand(1, 3, 16, 16) * 0.2)
    assert plain.shape == styled.shape == x.shape and (plain - styled).abs().max() > 1e-4
    assert float(plain.min()) >= 0 and float(plain.max()) <= 1


def test_clamp_before_the_loss_is_the_published_option() -> None:
    ours = METHODS.create("hierarchy-flow", **TINY)
    published = METHODS.create("hierarchy-flow", **TINY, clamp_output=True)
    out = torch.full((1, 3, 24, 24), 1.5, requires_grad=True)  # every pixel above 1
    content, style = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    published.losses(content, style, out)["total"].backward()
    assert out.grad.abs().sum() == 0  # clamped: no gradient at all
    out.grad = None
    ours.losses(content, style, out)["total"].backward()
    assert out.grad.abs().sum() > 0


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{args}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res.output


def test_fit_five_steps_then_translate_with_and_without_reference(shared_data: Path, tmp_path: Path) -> None:
    a_dir, b_dir = write_image_folders(shared_data, tmp_path / "data", size=40)
    run = tmp_path / "run"
    over = [f"data.root={tmp_path / 'data'}", "data.train_A=trainA", "data.train_B=trainB", "data.resize=[36,36]",
            "data.size=32", "data.num_workers=0", "method.translator.variant=hf+", "method.translator.pad_size=4",
            "train.steps=5", "train.log_every=1", "train.ckpt_every=5", "train.image_every=5", "train.device=cpu",
            "inference.working_size=32"]
    out = _ok(["fit", str(REPO / "recipes" / "hierarchy-flow.yaml"), *over, "-o", str(run)])
    assert "group G: 1,291,941 trainable params" in out and "schedule cosine" in out
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and all(torch.isfinite(torch.tensor(r["loss/G"])) for r in rows)
    assert rows[-1]["lr/G"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 over the run
    plain, styled = tmp_path / "plain", tmp_path / "styled"
    _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(plain), "--device", "cpu"])
    ref = next(iter(sorted(b_dir.iterdir())))
    _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(styled), "--device", "cpu",
         "--reference", str(ref)])
    report = json.loads((styled / "translate.json").read_text())
    assert report["reference"] == str(ref) and report["model"]["method"] == "hierarchy-flow"
    for src in sorted(a_dir.iterdir()):
        p, s = read_image(plain / src.name), read_image(styled / src.name)
        assert p.shape == s.shape == read_image(src).shape
    assert any((read_image(plain / f.name) - read_image(styled / f.name)).abs().max() > 1 / 255 for f in a_dir.iterdir())
    res = runner.invoke(app, ["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(tmp_path / "x"),
                              "--reference", str(tmp_path / "missing.png")])
    assert res.exit_code == 2 and "missing.png" in res.output and "Traceback" not in res.output


def test_bad_and_tiny_reference_images(shared_data: Path, tmp_path: Path) -> None:
    """Every unreadable file of the bad-input corpus as --reference: one line naming it, exit 2, nothing written,
    the file untouched; every readable one works, a 1x1 or 3-pixel-high one at native resolution too."""
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_bad_corpus", REPO / "scripts" / "make_bad_corpus.py")
    corpus_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus_mod)
    corpus = corpus_mod.build_corpus(tmp_path / "corpus", shared_data / "dawn_fog" / "images" / "foggy-001.jpg",
                                     size=(48, 40), large=64)
    a_dir, _ = write_image_folders(shared_data, tmp_path / "data", size=40)
    run = tmp_path / "run"
    _ok(["fit", str(REPO / "recipes" / "hierarchy-flow.yaml"), f"data.root={tmp_path / 'data'}", "data.train_A=trainA",
         "data.train_B=trainB", "data.resize=[36,36]", "data.size=32", "data.num_workers=0", "train.steps=1",
         "train.ckpt_every=1", "train.image_every=0", "train.device=cpu", "-o", str(run)])
    for name in corpus_mod.CORPUS_BAD_IMAGES:
        bad = corpus / "images" / name
        digest = hashlib.sha256(bad.read_bytes()).hexdigest()
        out = tmp_path / f"out_{name}"
        res = runner.invoke(app, ["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(out),
                                  "--reference", str(bad)])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and "Traceback" not in res.output, (name, res.output)
        assert lines[-1].startswith(f"error: --reference {bad}"), (name, res.output)
        assert not any(out.rglob("*.png")) and hashlib.sha256(bad.read_bytes()).hexdigest() == digest
    n_photos = len(list(a_dir.iterdir()))
    good = sorted(set((corpus / "images").iterdir()) - {corpus / "images" / n for n in corpus_mod.CORPUS_BAD_IMAGES})
    for ref in good:  # grey, 16-bit, RGBA, palette, CMYK, float, EXIF, 1x1, 3x20000 ...: at the working size
        out = tmp_path / f"good_{good.index(ref)}"
        _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(out), "--reference", str(ref)])
        assert len(list(out.glob("*.png"))) == n_photos, ref
    for name in ("one_pixel.png", "thin_3x20000.png"):  # at native resolution: padded like a photo
        out = tmp_path / f"native_{name}"
        _ok(["translate", "--ckpt", str(run), "--in", str(a_dir), "--out", str(out), "--size", "0",
             "--reference", str(corpus / "images" / name)])
        assert len(list(out.glob("*.png"))) == n_photos, name
