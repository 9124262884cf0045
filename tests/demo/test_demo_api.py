"""`taskbridge demo`'s JSON API without a browser: the columns, detections, top-5, limits and bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
DAWN = "dawn_fog/images/foggy-001.jpg"


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.status, resp.read()


def post(url: str, payload: object, content_type: str = "application/json", raw: bytes | None = None) -> tuple[int, dict]:
    body = raw if raw is not None else json.dumps(payload).encode()
    req = urllib.request.Request(url + "api/run", data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def upload(data: bytes, name: str = "photo.jpg") -> dict:
    return {"image": "data:image/jpeg;base64," + base64.b64encode(data).decode(), "filename": name}


def png_size(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.format == "PNG"
        return im.size


def test_page_and_options(demo_server) -> None:
    url, _ = demo_server
    status, html = get(url)
    assert status == 200 and b'id="file"' in html and b"/api/run" in html
    options = json.loads(get(url + "api/options")[1])
    assert options["restorers"] == ["identity", "aodnet", "sci-easy"]
    assert options["tasks"] == ["yolov5n", "cifar-resnet20"] and options["runs"] == ["smoke"]
    assert DAWN in options["samples"] and any(s.startswith("lowlight_unlabeled_sci/") for s in options["samples"])
    status, sample = get(url + "api/sample?name=" + DAWN)
    assert status == 200 and sample[:3] == b"\xff\xd8\xff"


def test_upload_restore_translate_detect(demo_server, shared_data: Path) -> None:
    """An uploaded DAWN photo: degraded | aodnet | the trained run, each with yolov5n boxes drawn."""
    url, _ = demo_server
    status, reply = post(url, {**upload((shared_data / DAWN).read_bytes(), "foggy-001.jpg"),
                               "restorers": ["aodnet"], "run": "smoke", "task": "yolov5n"})
    assert status == 200, reply
    assert reply["original_size"] == [1280, 675] and max(reply["size"]) == 320  # the working size
    cols = {c["key"]: c for c in reply["columns"]}
    assert list(cols) == ["degraded", "restored-aodnet", "translated"]
    assert "cyclegan" in cols["translated"]["title"]
    for col in cols.values():
        assert png_size(col["image"]) == tuple(reply["size"]) == png_size(col["annotated"])
        assert col["detections"] == len(col["boxes"]) and "task" in col["timings_ms"]
    assert cols["degraded"]["detections"] > 0 and cols["restored-aodnet"]["detections"] > 0
    box = cols["degraded"]["boxes"][0]
    assert set(box) == {"label", "score", "xyxy"} and box["score"] >= 0.25
    assert cols["degraded"]["annotated"] != cols["degraded"]["image"]  # boxes were drawn
    assert {"stage"} <= set(cols["restored-aodnet"]["timings_ms"]) and {"decode", "total"} <= set(reply["timings_ms"])


def test_sample_and_classifier_top5(demo_server) -> None:
    url, _ = demo_server
    options = json.loads(get(url + "api/options")[1])
    lowlight = next(s for s in options["samples"] if s.startswith("lowlight_unlabeled_sci/"))
    status, reply = post(url, {"sample": lowlight, "restorers": ["sci-easy", "identity"], "task": "cifar-resnet20"})
    assert status == 200, reply
    assert reply["task_kind"] == "classification" and [c["key"] for c in reply["columns"]] == [
        "degraded", "restored-sci-easy", "restored-identity"]
    for col in reply["columns"]:
        ps = [t["p"] for t in col["top5"]]
        assert len(ps) == 5 and ps == sorted(ps, reverse=True) and sum(ps) <= 1.0001
        assert "annotated" not in col
    # identity changes nothing
    assert reply["columns"][0]["image"] == reply["columns"][2]["image"]


def _tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, format="JPEG")
    return buf.getvalue()


def _cut_jpeg() -> bytes:
    """A photo's header and half its data: opens, fails to decode."""
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _png_of(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("payload, status, words", [
    (upload(b"hello, not an image", "notes.txt"), 400, "not an image"),
    (upload(_cut_jpeg(), "cut.jpg"), 400, "corrupt or unreadable image"),
    (upload(_png_of((2000, 2000)), "big.png"), 400, "photo too large"),  # 4 MP > the test's 3 MP limit
    (upload(b""), 400, "empty file"),
    ({"restorers": ["aodnet"]}, 400, "no photo"),
    ({"image": "%%% not base64"}, 400, "not valid base64"),
    ({"sample": "../../etc/passwd"}, 400, "unknown sample"),
    ({**upload(_tiny_jpeg()), "restorers": ["nope"]}, 400, "unknown restorer"),
    ({**upload(_tiny_jpeg()), "run": "/tmp/somewhere"}, 400, "unknown run"),
    ({**upload(_tiny_jpeg()), "task": "nope"}, 400, "unknown task"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_requests_are_one_line_errors(demo_server, payload, status, words) -> None:
    url, _ = demo_server
    got, reply = post(url, payload)
    assert got == status and words in reply["error"] and "\n" not in reply["error"], reply
    assert get(url + "api/options")[0] == 200  # still serving


def test_transport_errors(demo_server) -> None:
    url, _ = demo_server
    assert post(url, None, raw=b"{not json")[0] == 400
    got, reply = post(url, None, "text/plain", raw=b"{}")  # what a cross-site form could send: refused
    assert got == 415 and "application/json" in reply["error"]
    got, reply = post(url, None, raw=b"x" * (5 * 2**20))  # over 3 MiB of photo (as base64)
    assert got == 413 and "too large" in reply["error"]
    assert get(url + "api/options")[0] == 200


def test_a_model_failure_is_an_error_reply_not_a_crash(demo_server, monkeypatch) -> None:
    url, server = demo_server

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(server.engine, "_apply_task", broken)
    got, reply = post(url, {**upload(_tiny_jpeg()), "task": "yolov5n"})
    assert got == 500 and reply["error"] == "RuntimeError: out of memory second line"
    monkeypatch.undo()
    assert post(url, {**upload(_tiny_jpeg()), "task": "yolov5n"})[0] == 200


def test_help_explains_the_options() -> None:
    from taskbridge.cli import app

    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0
    for option in ("--host", "--port", "--size", "--restorer", "--task", "--run", "--runs-dir", "--max-upload-mb"):
        assert option in res.output
    assert "127.0.0.1" in res.output and "0 = pick a free one" in res.output


def test_cli_serves_on_a_free_port_and_prints_the_url(tmp_path: Path, shared_data: Path) -> None:
    env = {**os.environ, "TASKBRIDGE_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "taskbridge", "demo", "--port", "0", "--runs-dir", str(tmp_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("taskbridge demo: http://127.0.0.1:"), line or proc.stderr.read()
        url = line.split()[2]
        options = json.loads(get(url + "api/options")[1])
        assert options["runs"] == [] and "aodnet" in options["restorers"] and options["working_size"] == 640
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode is not None


def test_cli_refuses_an_unknown_restorer_or_a_folder_without_a_run(tmp_path: Path) -> None:
    from taskbridge.cli import app

    res = CliRunner().invoke(app, ["demo", "--restorer", "nope"])
    assert res.exit_code != 0 and "unknown restorer 'nope'" in res.output
    res = CliRunner().invoke(app, ["demo", "--run", str(tmp_path)])
    assert res.exit_code != 0 and "no checkpoint found" in res.output
