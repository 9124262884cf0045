"""`taskbridge demo`: a local web page to try restorers, a trained run and a task model on one photo (server.py)."""

from taskbridge.demo.server import (
    DemoConfig,
    DemoEngine,
    DemoError,
    find_runs,
    find_samples,
    make_server,
    server_url,
)

__all__ = ["DemoConfig", "DemoEngine", "DemoError", "find_runs", "find_samples", "make_server", "server_url"]
