"""`run_info.json`: the environment and the wall time of each `fit` invocation, which neither the
metrics nor the checkpoints record; written by `fit` so that `taskbridge report` can show them later."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from taskbridge.report.collect import RUN_INFO


def git_commit() -> str | None:
    """The commit of the taskbridge source tree (None outside a git checkout, e.g. an installed wheel)."""
    src = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() or None
    if commit and dirty.returncode == 0 and dirty.stdout.strip():
        commit += " (with uncommitted changes)"
    return commit


def environment(device: Any = None, world_size: int = 1) -> dict[str, Any]:
    import torch

    import taskbridge

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "taskbridge": taskbridge.__version__,
        "platform": platform.platform(),
        "device": str(device) if device is not None else None,
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        env["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def record_session(output_dir: str | Path, *, started: float, first_step: int, last_step: int,
                   device: Any = None, world_size: int = 1, resumed_from: str | None = None,
                   interrupted: bool = False) -> dict[str, Any]:
    """Add this invocation to run_info.json (a fresh start, from step 0, begins a new list)."""
    from taskbridge.data.io import atomic_write_text

    path = Path(output_dir) / RUN_INFO
    info: dict[str, Any] = {}
    if path.is_file() and first_step > 0:
        try:
            loaded = json.loads(path.read_text())
            info = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            info = {}
    ended = time.time()
    wall = max(ended - started, 1e-9)
    steps = max(last_step - first_step, 0)
    session = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ended)),
        "wall_s": round(wall, 3),
        "first_step": first_step,
        "last_step": last_step,
        "steps_per_s": round(steps / wall, 4) if steps else None,
        "resumed_from": resumed_from,
        "interrupted": interrupted,
    }
    sessions = [s for s in info.get("sessions", []) if isinstance(s, dict)]
    info = {"environment": environment(device, world_size), "sessions": [*sessions, session]}
    atomic_write_text(path, json.dumps(info, indent=1))
    return info
