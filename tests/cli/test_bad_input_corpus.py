"""Every command over the bad-input corpus (scripts/make_bad_corpus.py), each in its own process as a user runs it.

For every command: the exit code; no traceback; every bad file named on a line of its own and in the
command's JSON report; every good file processed; the inputs byte-identical afterwards; the payload
pickle never unpickled. docs/reliability.md lists the cases and what each command does with them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _corpus_module():
    spec = importlib.util.spec_from_file_location("make_bad_corpus", REPO / "scripts" / "make_bad_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CORPUS = _corpus_module()


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    CORPUS.build_corpus(root, shared_data / "dawn_fog" / "images" / "foggy-001.jpg",
                        shared_data / "aodnet_weights" / "dehazer.pth")
    return root


@pytest.fixture(scope="module")
def before(corpus: Path) -> dict[str, str]:
    return _hashes(corpus)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "from taskbridge.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _clean(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.replace("\r", "\n")
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err[-3000:]
    return err


def _bad_images(corpus: Path) -> set[str]:
    return {str(corpus / "images" / n) for n in CORPUS.CORPUS_BAD_IMAGES}


def _good_images(corpus: Path) -> set[str]:
    return {str(p) for p in (corpus / "images").iterdir()} - _bad_images(corpus)


WRITING = {
    "restore": ["restore", "-r", "aodnet"],
    "degrade": ["degrade", "--kind", "haze"],
    # the face pipeline (detector on every photo, random small network; side-by-side pictures too)
    "restore-gfpgan": ["restore", "-r", "gfpgan", "-s", "weights=None", "-s", "out_size=128", "-s", "narrow=0.25",
                       "--side-by-side"],
}


@pytest.mark.parametrize("name", sorted(WRITING))
def test_writing_commands_skip_and_name_bad_images(name: str, corpus: Path, before: dict, tmp_path: Path) -> None:
    command = WRITING[name][0]
    out = tmp_path / "out"
    proc = run([*WRITING[name], "--in", str(corpus / "images"), "--out", str(out)], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((out / f"{command}.json").read_text())
    skipped = {s["file"] if os.path.isabs(s["file"]) else str(corpus / "images" / s["file"]) for s in report["skipped"]}
    assert skipped == _bad_images(corpus)
    for name in CORPUS.CORPUS_BAD_IMAGES:  # one line each, naming the file
        assert sum(name in line for line in err.splitlines() if line.startswith("skipped: ")) == 1, name
    written = report["written"] if command == "restore" else {v["source"] for v in report["images"].values()}
    assert len(written) == len(_good_images(corpus))  # same-stem files both written, under distinct names
    outputs = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".json" and not p.stem.endswith("_side_by_side")]
    assert len(outputs) == len(_good_images(corpus))
    assert _hashes(corpus) == before  # inputs untouched


def test_align_faces_skips_and_names_bad_images(corpus: Path, before: dict, tmp_path: Path) -> None:
    out = tmp_path / "aligned"
    proc = run(["align-faces", "--in", str(corpus / "images"), "--out", str(out), "--size", "64"], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((out / "faces.json").read_text())
    skipped = {s["file"] if os.path.isabs(s["file"]) else str(corpus / "images" / s["file"]) for s in report["skipped"]}
    assert skipped == _bad_images(corpus)
    for name in CORPUS.CORPUS_BAD_IMAGES:
        assert sum(name in line for line in err.splitlines() if line.startswith("skipped: ")) == 1, name
    seen = {r["source"] for r in report["faces"].values()} | set(report["no_face"])
    assert seen == _good_images(corpus)  # every readable photo: aligned, or listed as without a face
    assert _hashes(corpus) == before


def test_fit_then_translate_over_the_corpus(corpus: Path, before: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run(["fit", str(REPO / "recipes" / "smoke.yaml"), f"data.train_A={corpus / 'images'}",
                f"data.train_B={corpus / 'images'}", "data.resize=[20,20]", "data.size=16", f"train.steps={len(_good_images(corpus) | _bad_images(corpus))}",
                "train.image_every=0", "train.progress=false", "-o", str(run_dir)], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    assert all(line.startswith(("warning: ", "skipped: ")) for line in err.splitlines() if line.strip())
    lines = proc.stdout.splitlines()
    summary = json.loads("\n".join(lines[lines.index("{"):lines.index("}") + 1]))
    # one epoch of batch 1 reads every file: each bad one is listed once, with its reason, and was warned about
    assert sorted(s["file"] for s in summary["skipped"]) == sorted(_bad_images(corpus)), err[-3000:]
    assert all(s["reason"] and any(s["file"] in line for line in err.splitlines()) for s in summary["skipped"])
    # the run's report over grids that cannot be read (the corpus's bad images put where grids go): a page with
    # a note naming each, no traceback, the run's files untouched
    for name in CORPUS.CORPUS_BAD_IMAGES:
        (run_dir / "images").mkdir(exist_ok=True)
        (run_dir / "images" / f"step_0000001_{Path(name).stem}.png").write_bytes((corpus / "images" / name).read_bytes())
    run_files = _hashes(run_dir)
    proc = run(["report", str(run_dir), "-o", str(tmp_path / "page.html")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    page = (tmp_path / "page.html").read_text()
    assert all(f"step_0000001_{Path(n).stem}.png" in page for n in CORPUS.CORPUS_BAD_IMAGES)
    assert _hashes(run_dir) == run_files
    out = tmp_path / "translated"
    proc = run(["translate", "--ckpt", str(run_dir), "--in", str(corpus / "images"), "--out", str(out)], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((out / "translate.json").read_text())
    assert {s["file"] for s in report["skipped"]} == _bad_images(corpus)
    assert set(report["written"]) == _good_images(corpus)
    from taskbridge.data.io import read_image

    for src, dst in report["written"].items():  # full resolution: every output has its input's size, 1x1 included
        assert read_image(dst).shape == read_image(src).shape, src
    proc = run(["translate", "--ckpt", str(run_dir), "--in", str(corpus / "images"), "--out", str(corpus / "images")],
               tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and "is the input folder" in err and len(err.strip().splitlines()) == 1
    good = sorted(_good_images(corpus))[0]  # a reference given to a method that takes none: one line, nothing written
    proc = run(["translate", "--ckpt", str(run_dir), "--in", str(corpus / "images"), "--out", str(tmp_path / "ref"),
                "--reference", good], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and "translates without a reference image; drop --reference" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ref" / "translate.json").exists()
    assert _hashes(corpus) == before


def test_evaluate_skips_bad_images_and_labels(corpus: Path, before: dict, tmp_path: Path) -> None:
    proc = run(["evaluate", "--task", "yolov5n", "--data", str(corpus / "detection"), "--grid", "2",
                "--bootstrap", "50", "--out", str(tmp_path / "ev")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    skipped = {Path(s["file"]).stem for s in res["skipped"]}
    assert skipped == {*CORPUS.CORPUS_BAD_LABELS, "truncated"}
    good = {"good", *CORPUS.CORPUS_FIXABLE_LABELS}
    assert res["runs"]["input"]["num_images"] == len(good)
    assert res["runs"]["input"]["bootstrap"]["map50"]["resamples"] == 50  # over the photos that were scored
    for stem in skipped:
        assert sum(f"{stem}." in line for line in err.splitlines() if line.startswith("skipped: ")) == 1, stem
    proc = run(["evaluate", "--task", "yolov5n", "--data", str(corpus / "yolo"), "--split", "val", "--grid", "0",
                "--out", str(tmp_path / "yolo")], tmp_path)
    assert proc.returncode == 0, _clean(proc)[-3000:]
    res = json.loads((tmp_path / "yolo" / "results.json").read_text())
    assert {Path(s["file"]).stem for s in res["skipped"]} == {"malformed", "not_numbers", "negative_size"}
    proc = run(["evaluate", "--task", "yolov5n", "--data", str(corpus / "nolabels"), "--out", str(tmp_path / "n")],
               tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and "no labels found" in err and len(err.strip().splitlines()) == 1
    assert _hashes(corpus) == before


def test_demo_answers_every_corpus_image_in_one_line(corpus: Path, before: dict, tmp_path: Path) -> None:
    """`taskbridge demo` as a user starts it: every corpus image uploaded; good ones come back with their
    columns, bad ones as one line naming the upload; the server keeps serving; the corpus is untouched."""
    import base64
    import urllib.error
    import urllib.request

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-c", "from taskbridge.cli import main; main()", "demo", "--port", "0",
                               "--size", "64", "--restorer", "identity", "--task", "yolov5n", "--runs-dir",
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path)
    try:
        first = server.stdout.readline()
        assert first.startswith("taskbridge demo: http://127.0.0.1:"), first + server.stderr.read()
        url = first.split()[2]
        replies = {}
        for path in sorted((corpus / "images").iterdir()):
            body = json.dumps({"image": "data:;base64," + base64.b64encode(path.read_bytes()).decode(),
                               "filename": path.name, "restorers": ["identity"], "task": "yolov5n"}).encode()
            req = urllib.request.Request(url + "api/run", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    replies[str(path)] = (resp.status, json.loads(resp.read()))
            except urllib.error.HTTPError as bad:
                replies[str(path)] = (bad.code, json.loads(bad.read()))
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr[-3000:]
    for file, (status, reply) in replies.items():
        if file in _bad_images(corpus):
            assert status == 400 and reply["error"].startswith(Path(file).name + ": ") and "\n" not in reply["error"]
        else:
            assert status == 200 and [c["key"] for c in reply["columns"]] == ["degraded", "restored-identity"], file
    assert set(replies) == _bad_images(corpus) | _good_images(corpus)
    assert _hashes(corpus) == before


def test_fit_with_oracle_labels_refuses_bad_label_files_in_one_line(corpus: Path, before: dict, tmp_path: Path,
                                                                    shared_data: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """method.oracle_labels (a diagnostic that trains on human boxes) over the corpus's YOLO folder: a missing
    folder is refused before any run folder exists; a malformed label file of a training photo stops the fit
    at its first step, one line naming the file (a silently dropped box would change the ceiling measured)."""
    monkeypatch.setenv("TASKBRIDGE_DATA", str(shared_data))  # method.nuq_fit.folder resolves under it
    oracle = [str(REPO / "recipes" / "dehaze-det-vat-learn-oracle.yaml"), f"data.train_A={corpus / 'yolo' / 'images' / 'val'}",
              "data.split=null", "train.steps=2", "train.progress=false", "--no-report"]
    proc = run(["fit", *oracle, f"method.oracle_labels={tmp_path / 'nowhere'}", "-o", str(tmp_path / "run")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1
    assert f"method.oracle_labels: {tmp_path / 'nowhere'} is not a folder of YOLO label files" in err
    assert not (tmp_path / "run").exists()
    proc = run(["fit", *oracle, f"method.oracle_labels={corpus / 'yolo' / 'labels' / 'val'}", "-o",
                str(tmp_path / "run2")], tmp_path)
    errors = [line for line in _clean(proc).splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    named = {stem for stem in ("malformed", "not_numbers", "negative_size")
             if str(corpus / "yolo" / "labels" / "val" / f"{stem}.txt") in errors[0]}
    assert len(named) == 1, errors[0]
    assert _hashes(corpus) == before


def test_evaluate_quality_skips_what_it_cannot_score(corpus: Path, before: dict, tmp_path: Path) -> None:
    proc = run(["evaluate-quality", "--pred", str(corpus / "images"), "--json", str(tmp_path / "q.json")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((tmp_path / "q.json").read_text())
    too_small = {str(corpus / "images" / n) for n in ("one_pixel.png", "thin_3x20000.png", "tall_20000x3.png")}
    assert {s["file"] for s in report["skipped"]} == _bad_images(corpus) | too_small
    assert report["count"] == len(_good_images(corpus)) - len(too_small)
    assert _hashes(corpus) == before


@pytest.mark.parametrize("weights", ["zero.pth", "truncated.pth", "payload.pt"])
def test_bad_weights_are_one_line_and_never_run_code(weights: str, corpus: Path, before: dict, tmp_path: Path) -> None:
    proc = run(["restore", "-r", "aodnet", "-s", f"weights={corpus / 'weights' / weights}", "--in",
                str(corpus / "nolabels" / "images"), "--out", str(tmp_path / "o")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and weights in err
    assert not (corpus / "weights" / CORPUS.PAYLOAD_MARKER).exists()
    assert _hashes(corpus) == before


@pytest.mark.parametrize("weights", ["zero.pth", "truncated.pth", "payload.pt"])
def test_bad_yolov5_weights_are_one_line_and_never_run_code(weights: str, corpus: Path, before: dict,
                                                           tmp_path: Path) -> None:
    """The YOLOv5 task reads official checkpoints with its own unpickler: the same refusal as every other."""
    proc = run(["evaluate", "--task", "yolov5n", "--task-opt", f"weights={corpus / 'weights' / weights}",
                "--data", str(corpus / "detection"), "--out", str(tmp_path / "o")], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1 and weights in err
    assert not (corpus / "weights" / CORPUS.PAYLOAD_MARKER).exists()
    assert _hashes(corpus) == before


def test_a_wrong_checksum_is_refused(corpus: Path, tmp_path: Path, shared_data: Path) -> None:
    fake = tmp_path / "weights" / "aodnet_weights"
    fake.mkdir(parents=True)
    (fake / "dehazer.pth").write_bytes((shared_data / "aodnet_weights" / "dehazer.pth").read_bytes()[:-1] + b"x")
    env_root = tmp_path / "weights"
    proc = subprocess.run([sys.executable, "-c", "from taskbridge.cli import main; main()", "restore", "-r", "aodnet",
                           "--in", str(corpus / "nolabels" / "images"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "TASKBRIDGE_WEIGHTS": str(env_root), "TASKBRIDGE_CACHE": str(tmp_path / "c")})
    err = _clean(proc)
    assert proc.returncode == 2 and "sha256" in err.lower() and len(err.strip().splitlines()) == 1


def test_a_large_photo_is_restored_in_tiles(corpus: Path, before: dict, tmp_path: Path) -> None:
    out = tmp_path / "large"
    proc = run(["restore", "-r", "sci-medium", "--in", str(corpus / "large"), "--out", str(out), "--tile", "1024"], tmp_path)
    err = _clean(proc)
    assert proc.returncode == 0, err[-3000:]
    from PIL import Image

    with Image.open(out / "large_4000.png") as im:
        assert im.size == (4000, 4000)
    assert _hashes(corpus) == before
