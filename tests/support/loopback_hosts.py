"""A loopback HTTP server that plays the public hosts (github.com raw files and release assets).

Files come from the shared data folder, at the URL layout of the real hosts as rewritten by
TASKBRIDGE_MIRROR (`http://127.0.0.1:PORT/github.com/<owner>/<repo>/raw/<commit>/<path>`), built
from the data set manifests and the weight specs, so the tests exercise the real URLs. It answers
Range requests with 206, and can be told to drop the connection part-way through a file, to serve
other bytes, or to ignore Range (answer 200 with the whole file).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def url_key(url: str) -> str:
    """`https://github.com/a/b` -> `/github.com/a/b`: the path the mirror asks the server for."""
    return "/" + re.sub(r"^https?://", "", url)


def routes_from_registry(shared_data: Path) -> dict[str, Path]:
    """Every data set file and every weights file that the shared folder holds, by the path of its real URL."""
    from taskbridge import hub
    from taskbridge.fetch import datasets

    routes: dict[str, Path] = {}
    for name in datasets.data_set_names():
        for f in datasets.data_set(name).files:
            routes[url_key(f.url)] = shared_data / name / f.path
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        local = shared_data / spec.subdir / spec.filename
        if spec.url and local.is_file():
            routes[url_key(spec.url)] = local
    return routes


class LoopbackHosts:
    """The server's state: routes, what was asked (path and Range header), and the faults to inject."""

    def __init__(self, routes: dict[str, Path]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the connection is cut (once)
        self.corrupt: set[str] = set()  # paths served with one byte changed
        self.ignore_range = False
        self.base_url = ""
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.drop_after.clear()
            self.corrupt.clear()
            self.ignore_range = False

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hosts = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                with hosts._lock:
                    hosts.requests.append((self.path, rng))
                    drop = hosts.drop_after.pop(self.path, None)
                    corrupt = self.path in hosts.corrupt
                    ignore = hosts.ignore_range
                local = hosts.routes.get(self.path)
                if local is None or not local.is_file():
                    self.send_error(404, "not on this loopback host")
                    return
                data = local.read_bytes()
                if corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and not ignore:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if drop is not None:
                    self.wfile.write(body[:drop])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@contextmanager
def serve(routes: dict[str, Path]) -> Iterator[LoopbackHosts]:
    """Run the server on 127.0.0.1 (a free port) in a thread for the duration of the block."""
    hosts = LoopbackHosts(routes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hosts.handler())
    server.daemon_threads = True
    hosts.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="loopback-hosts", daemon=True)
    thread.start()
    try:
        yield hosts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main() -> None:
    """`python tests/support/loopback_hosts.py SHARED_DATA`: serve until interrupted (manual checks)."""
    import sys
    import time

    with serve(routes_from_registry(Path(sys.argv[1]))) as hosts:
        print(f"TASKBRIDGE_MIRROR={hosts.base_url}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
