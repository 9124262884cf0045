"""`taskbridge demo`: a local web page that shows one photo degraded | restored | translated, with a task model.

Why the standard library (`http.server.ThreadingHTTPServer`) and not Flask/FastAPI: the demo is one
static page, a small JSON API and one local user at a time; the heavy work is torch either way. The
standard library serves that with no new runtime dependency to install, pin or audit. Images travel as
base64 PNG inside JSON (no multipart parsing, no temporary upload folder), so the page can show and
download them straight from the reply.

What keeps it safe to leave running: it binds 127.0.0.1 unless told otherwise; POST /api/run takes only
`Content-Type: application/json`, which another web site cannot send to it without a CORS preflight
this server never grants; a trained run is picked from the list the server built at start (never a path
typed into the page); uploads over the byte limit and photos over the pixel limit are refused before
they are decoded. Every bad input becomes a one-line JSON error; the server keeps running.

Models load once, on first use, and stay cached per name; inference runs one request at a time under
`torch.no_grad` on the CPU, on a copy of the photo whose longest side is at most the working size.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_RESTORERS: tuple[str, ...] = ("identity", "dcp", "aodnet", "sci-easy", "sci-medium", "sci-difficult")
DEFAULT_TASKS: tuple[str, ...] = ("yolov5n", "cifar-resnet20", "cifar-resnet56")
# Classifiers that take a fixed input size but do not resize themselves (CIFAR nets see 32 x 32 photos).
CLASSIFIER_INPUT: dict[str, int] = {"cifar-resnet20": 32, "cifar-resnet56": 32}
# Sample photos offered on the page, relative to the data root: (folder, how many).
SAMPLE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("dawn_fog/images", 4),
    ("lowlight_unlabeled_sci/easy", 1),
    ("lowlight_unlabeled_sci/medium", 1),
    ("lowlight_unlabeled_sci/difficult", 1),
)


class DemoError(ValueError):
    """A request the demo cannot serve; the message is shown on the page as one line."""


@dataclass
class DemoConfig:
    """What the page offers and the limits on what it accepts."""

    working_size: int = 640  # longest side of the photo the models see
    max_upload_bytes: int = 25 * 2**20
    max_pixels: int = 60_000_000  # of the uploaded photo, checked from its header before decoding
    restorers: tuple[str, ...] = DEFAULT_RESTORERS
    tasks: tuple[str, ...] = DEFAULT_TASKS
    runs: dict[str, Path] = field(default_factory=dict)  # label on the page -> run folder
    samples: dict[str, Path] = field(default_factory=dict)  # label on the page -> photo
    conf: float = 0.25  # score threshold of the drawn boxes (as `evaluate --grid-conf`)
    iou: float = 0.45
    max_det: int = 100


# --------------------------------------------------------------------------------------- discovery


def find_runs(folders: Iterable[str | os.PathLike[str]], depth: int = 3) -> dict[str, Path]:
    """Run folders (a `checkpoints/` folder with a LAST pointer or a best/ checkpoint) under `folders`.

    Only these (and runs named on the command line) can be chosen on the page.
    """
    from taskbridge import checkpoint as ckpt

    found: dict[str, Path] = {}
    for top in folders:
        top = Path(top)
        if not top.is_dir():
            continue
        for here, dirs, _files in os.walk(top):
            level = len(Path(here).relative_to(top).parts)
            if (Path(here) / "checkpoints").is_dir():
                try:
                    ckpt.resolve_checkpoint(here, prefer="best")
                except ckpt.CheckpointError:
                    pass
                else:
                    found[str(Path(here))] = Path(here)
                dirs[:] = []  # a run's own sub-folders hold no further runs
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if level < depth else []
    return found


def find_samples(root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """A few photos from the shared data (DAWN fog, low-light) to try without uploading; none if absent."""
    from taskbridge.data.io import IMAGE_SUFFIXES
    from taskbridge.data.root import data_root

    base = data_root(root)
    samples: dict[str, Path] = {}
    for folder, count in SAMPLE_FOLDERS:
        d = base / folder
        if d.is_dir():
            for p in sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:count]:
                samples[f"{folder}/{p.name}"] = p
    return samples


# --------------------------------------------------------------------------------------- images


def decode_photo(data: bytes, config: DemoConfig) -> tuple[Tensor, tuple[int, int]]:
    """Uploaded bytes -> float [3, h, w] in [0, 1] at most `working_size` on its longest side (8-bit values),
    and the photo's own (width, height). The header is checked first so a huge photo is never decoded."""
    from PIL import Image

    from taskbridge.data.io import ImageReadError, decode_image

    if not data:
        raise DemoError("empty file: choose a photo")
    if len(data) > config.max_upload_bytes:
        raise DemoError(f"file too large ({len(data) / 2**20:.1f} MiB; the limit is "
                        f"{config.max_upload_bytes / 2**20:.0f} MiB)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
    except Exception as err:  # PIL raises many types for non-images (incl. DecompressionBombError)
        raise DemoError(f"not an image ({type(err).__name__}): upload a JPEG, PNG, BMP, TIFF or WebP photo") from None
    if w * h > config.max_pixels:
        raise DemoError(f"photo too large ({w} x {h} = {w * h / 1e6:.0f} MP; the limit is "
                        f"{config.max_pixels / 1e6:.0f} MP)")
    # the project's reader (EXIF rotation, 16-bit, alpha, truncated files), on the bytes in memory
    try:
        image = decode_image(io.BytesIO(data), "upload", dtype=torch.uint8)
    except ImageReadError as err:
        reason = str(err.__cause__ or err).splitlines()[0]
        raise DemoError(f"corrupt or unreadable image ({reason})") from None
    original = (int(image.shape[-1]), int(image.shape[-2]))
    return fit_working_size(image, config.working_size), original


def fit_working_size(image: Tensor, size: int) -> Tensor:
    """uint8 [3, H, W] -> float [3, h, w] with max(h, w) <= size (antialiased, aspect kept), 8-bit values."""
    from taskbridge.data.transforms import quantize8, resize_image

    x = image.float()[None] / 255.0
    h, w = x.shape[-2:]
    scale = size / max(h, w) if size and max(h, w) > size else 1.0
    if scale < 1.0:
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = quantize8(resize_image(x, hw, "antialias"))
    return x[0]


def png_base64(image: Tensor) -> str:
    """uint8 or float [3, H, W] -> base64 PNG (fast compression: the page shows it at once)."""
    from PIL import Image

    from taskbridge.data.io import to_uint8_hwc

    buf = io.BytesIO()
    Image.fromarray(to_uint8_hwc(image)).save(buf, format="PNG", compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _data_url_bytes(text: str) -> bytes:
    """A `data:...;base64,` URL or bare base64 -> bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DemoError("the upload is not valid base64 data") from None


# --------------------------------------------------------------------------------------- models


class DemoEngine:
    """Loads each model once (cached per name) and runs one request at a time."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self._restorers: dict[str, Any] = {}
        self._tasks: dict[str, Any] = {}
        self._runs: dict[str, Any] = {}

    def options(self) -> dict[str, Any]:
        """What the page offers (restorers, tasks, runs, samples) and the limits it checks before sending."""
        c = self.config
        return {"restorers": list(c.restorers), "tasks": list(c.tasks), "runs": list(c.runs),
                "samples": list(c.samples), "working_size": c.working_size,
                "max_upload_bytes": c.max_upload_bytes}

    def _cached(self, cache: dict[str, Any], name: str, build: Any, timings: dict[str, float]) -> Any:
        if name not in cache:
            t0 = time.perf_counter()
            cache[name] = build()
            timings[f"load {name}"] = _ms(t0)
        return cache[name]

    def restorer(self, name: str, timings: dict[str, float]) -> Any:
        from taskbridge.inference import RestorerStage
        from taskbridge.registry import RESTORERS

        if name not in self.config.restorers:
            raise DemoError(f"unknown restorer '{name}'; one of {', '.join(self.config.restorers)}")
        return self._cached(self._restorers, name, lambda: RestorerStage(RESTORERS.create(name), name).eval(), timings)

    def task(self, name: str, timings: dict[str, float]) -> Any:
        from taskbridge.registry import TASKS

        if name not in self.config.tasks:
            raise DemoError(f"unknown task '{name}'; one of {', '.join(self.config.tasks)}")

        def build() -> Any:
            model = TASKS.create(name).eval()
            model.name = name
            with torch.no_grad():  # the first call pays one-off set-up; count it as loading, not as the photo's time
                self._apply_task(model, torch.full((3, 64, 64), 0.5))
            return model

        return self._cached(self._tasks, name, build, timings)

    def run_model(self, label: str, timings: dict[str, float]) -> Any:
        from taskbridge.inference import load_inference_model

        if label not in self.config.runs:
            raise DemoError(f"unknown run '{label}'; start the demo with --run FOLDER or --runs-dir to offer it")
        return self._cached(self._runs, label, lambda: load_inference_model(self.config.runs[label], device="cpu"),
                            timings)

    def sample_bytes(self, label: str) -> bytes:
        if label not in self.config.samples:
            raise DemoError(f"unknown sample '{label}'")
        return self.config.samples[label].read_bytes()

    # ---------------------------------------------------------------- one request

    def process(self, request: dict[str, Any]) -> dict[str, Any]:
        """Decode the photo, apply each chosen stage to it, run the task on every column; JSON-ready reply."""
        if not isinstance(request, dict):
            raise DemoError("the request must be a JSON object")
        restorers = request.get("restorers") or []
        if isinstance(restorers, str):
            restorers = [restorers]
        if not isinstance(restorers, list) or not all(isinstance(r, str) for r in restorers):
            raise DemoError("'restorers' must be a list of names")
        run_label = request.get("run") or None
        task_name = request.get("task") or None
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if request.get("image"):
            if not isinstance(request["image"], str):
                raise DemoError("'image' must be a base64 string")
            data = _data_url_bytes(request["image"])
            source = str(request.get("filename") or "upload")[:200]
        elif request.get("sample"):
            data = self.sample_bytes(str(request["sample"]))
            source = str(request["sample"])
        else:
            raise DemoError("no photo: drop or pick one, or choose a sample")
        try:
            photo, original = decode_photo(data, self.config)
        except DemoError as err:  # one line naming the photo, as every other command does
            raise DemoError(f"{source}: {err}") from None
        timings["decode"] = _ms(t0)
        with self.lock, torch.no_grad():
            columns = self._columns(photo, list(dict.fromkeys(restorers)), run_label, timings)
            task = self.task(task_name, timings) if task_name else None
            for col in columns:
                image = col.pop("tensor")
                col["image"] = png_base64(image)
                if task is not None:
                    t0 = time.perf_counter()
                    col.update(self._apply_task(task, image))
                    col["timings_ms"]["task"] = _ms(t0)
        timings["total"] = _ms(t_all)
        return {"source": source, "original_size": list(original), "size": [int(photo.shape[-1]), int(photo.shape[-2])],
                "task": task_name, "task_kind": None if task is None else getattr(task, "kind", None),
                "columns": columns, "timings_ms": timings}

    def _columns(self, photo: Tensor, restorers: Sequence[str], run_label: str | None,
                 timings: dict[str, float]) -> list[dict[str, Any]]:
        """degraded, one column per restorer, then the trained run (each applied to the degraded photo)."""
        from taskbridge.data.transforms import quantize8

        x = photo[None]
        columns: list[dict[str, Any]] = [{"key": "degraded", "title": "degraded (input)", "tensor": photo,
                                          "timings_ms": {}}]
        for name in restorers:
            stage = self.restorer(name, timings)
            t0 = time.perf_counter()
            out = quantize8(stage(x))[0]
            columns.append({"key": f"restored-{name}", "title": f"restored: {name}", "tensor": out,
                            "timings_ms": {"stage": _ms(t0)}})
        if run_label:
            model = self.run_model(run_label, timings)
            owns = model.owns()
            t0 = time.perf_counter()
            out = quantize8(model.translate(x))[0]
            inside = f", {owns['restorer']} inside" if owns.get("restorer") else ""
            columns.append({"key": "translated", "title": f"translated: {owns.get('method')}{inside}", "tensor": out,
                            "run": run_label, "timings_ms": {"stage": _ms(t0)}})
        return columns

    def _apply_task(self, task: Any, image: Tensor) -> dict[str, Any]:
        if getattr(task, "kind", "") == "detection":
            return self._detect(task, image)
        if getattr(task, "kind", "") == "classification":
            return self._classify(task, image)
        raise DemoError(f"task kind '{getattr(task, 'kind', '?')}' is not shown by the demo")

    def _detect(self, task: Any, image: Tensor) -> dict[str, Any]:
        """Boxes above the score threshold under the evaluation protocol, drawn on the photo as `evaluate --grid` does."""
        from taskbridge.evaluation.detection import DetectionProtocol, detect_photo
        from taskbridge.evaluation.report import draw_detections

        c = self.config
        protocol = DetectionProtocol(img_size=c.working_size, conf_thres=c.conf, iou_thres=c.iou, max_det=c.max_det)
        boxes, scores, labels = detect_photo(task, image, protocol, torch.device("cpu"))
        names = [task.class_names[int(k)] if int(k) < len(task.class_names) else str(int(k)) for k in labels]
        tags = [f"{n} {float(s):.2f}" for n, s in zip(names, scores, strict=True)]
        drawn = draw_detections(image, boxes, tags, "orange", width=max(2, round(max(image.shape[-2:]) / 320)))
        return {"annotated": png_base64(drawn), "detections": len(tags),
                "boxes": [{"label": n, "score": round(float(s), 4), "xyxy": [round(float(v), 1) for v in b]}
                          for n, s, b in zip(names, scores, boxes, strict=True)]}

    def _classify(self, task: Any, image: Tensor) -> dict[str, Any]:
        """Top-5 classes of the photo (resized to the classifier's input size where it needs one)."""
        x = image[None]
        size = CLASSIFIER_INPUT.get(getattr(task, "name", ""))
        if size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        probs = task.predict(x)[0].float()
        top = probs.topk(min(5, probs.numel()))
        return {"top5": [{"label": task.class_names[int(i)], "p": round(float(p), 4)}
                         for p, i in zip(top.values, top.indices, strict=True)]}


def _ms(t0: float) -> float:
    return round(1000 * (time.perf_counter() - t0), 1)


# --------------------------------------------------------------------------------------- HTTP


def page_html() -> bytes:
    return resources.files("taskbridge.demo").joinpath("page.html").read_bytes()


class DemoHandler(BaseHTTPRequestHandler):
    """GET / (the page), GET /api/options, GET /api/sample?name=..., POST /api/run (JSON in, JSON out)."""

    engine: DemoEngine  # set on the subclass `make_server` builds
    quiet: bool = True
    server_version = "taskbridge-demo"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: dict[str, Any], status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        self._json({"error": " ".join(str(message).split())}, status)  # one line, whatever the message held

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page_html(), "text/html; charset=utf-8",
                           {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})
            elif url.path == "/api/options":
                self._json(self.engine.options())
            elif url.path == "/api/sample":
                name = (parse_qs(url.query).get("name") or [""])[0]
                data = self.engine.sample_bytes(name)
                kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "application/octet-stream"
                kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else kind
                self._send(HTTPStatus.OK, data, kind)
            elif url.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            else:
                self._error(f"no such page: {url.path}", HTTPStatus.NOT_FOUND)
        except DemoError as err:
            self._error(str(err), HTTPStatus.NOT_FOUND)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if urlparse(self.path).path != "/api/run":
            self._error(f"no such endpoint: {self.path}", HTTPStatus.NOT_FOUND)
            return
        if self.headers.get_content_type() != "application/json":
            self._error("POST /api/run takes Content-Type: application/json", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        # base64 makes an upload 4/3 larger; leave room for the other fields
        limit = self.engine.config.max_upload_bytes * 4 // 3 + 2**16
        if length < 0 or length > limit:
            self._drain(length)
            self._error(f"upload too large ({max(length, 0) / 2**20:.1f} MiB sent; the limit is "
                        f"{self.engine.config.max_upload_bytes / 2**20:.0f} MiB of photo)",
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._error("the request is not valid JSON")
            return
        try:
            reply = self.engine.process(request)
        except DemoError as err:
            self._error(str(err))
            return
        except Exception as err:  # a model failing on one photo must not end the server
            traceback.print_exc()
            self._error(f"{type(err).__name__}: {err}", HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self._json(reply)

    def _drain(self, length: int, cap: int = 2**30) -> None:
        """Read and drop a refused body (up to `cap`) so the browser reads the error instead of a reset."""
        if length <= 0 or length > cap:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 2**20))
            if not chunk:
                break
            length -= len(chunk)


def make_server(config: DemoConfig, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> ThreadingHTTPServer:
    """A ready server (not yet serving); port 0 picks a free one (`server.server_address[1]`)."""
    engine = DemoEngine(config)
    handler = type("BoundDemoHandler", (DemoHandler,), {"engine": engine, "quiet": quiet})
    server_class = ThreadingHTTPServer
    if ":" in host:  # an IPv6 address such as ::1
        server_class = type("DemoServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    server.engine = engine  # type: ignore[attr-defined]
    return server


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = str(host)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"
