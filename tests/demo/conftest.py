"""Fixtures of the demo tests: a tiny trained run (5 CPU steps of recipes/smoke.yaml) and a live demo server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A CycleGAN run folder written by `taskbridge fit` (seconds on one CPU thread)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {**os.environ, "TASKBRIDGE_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "taskbridge", "fit", "recipes/smoke.yaml", "-o",
                           str(out), "--no-report"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def extra_run() -> dict[str, Path]:
    """TASKBRIDGE_DEMO_RUN=RUN_FOLDER offers a really trained run too (the browser test then picks it): how
    the README's picture was taken, with a 300-step VaT run instead of the 5-step smoke CycleGAN."""
    folder = os.environ.get("TASKBRIDGE_DEMO_RUN")
    return {Path(folder).name: Path(folder).resolve()} if folder else {}


@pytest.fixture(scope="session")
def demo_server(smoke_run: Path, shared_data: Path) -> Iterator[tuple[str, object]]:
    """The demo served on 127.0.0.1 at a free port from a thread: (base URL, server)."""
    from taskbridge.demo import DemoConfig, find_samples, make_server, server_url

    config = DemoConfig(working_size=320, max_upload_bytes=3 * 2**20, max_pixels=3_000_000,
                        restorers=("identity", "aodnet", "sci-easy"), tasks=("yolov5n", "cifar-resnet20"),
                        runs={"smoke": smoke_run, **extra_run()}, samples=find_samples(shared_data))
    server = make_server(config, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_url(server), server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
