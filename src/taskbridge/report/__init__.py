"""`taskbridge report RUN`: one self-contained HTML page per training run (docs/report.md).

`collect` reads the run folder, `curves` draws the loss/validation curves, `html` renders the page;
`fit` calls `write_fit_report` at the end so every finished run carries its `report.html`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from taskbridge.report.collect import NotARunError, RunSummary, collect

REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "NotARunError", "RunSummary", "collect", "write_fit_report", "write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None, max_image_steps: int | None = None) -> Path:
    """Render RUN's page to `out` (default RUN/report.html); only an .html file is ever written, so a
    run's own files (metrics, checkpoints, images, JSON records) cannot be overwritten by mistake."""
    from taskbridge.data.io import atomic_write_text
    from taskbridge.report.html import MAX_IMAGE_STEPS, render

    summary = collect(run_dir)
    target = Path(out) if out is not None else summary.run_dir / REPORT_NAME
    if target.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{target}: the report is an HTML file; give a path ending in .html")
    if target.is_dir():
        raise ValueError(f"{target}: is a folder; give a file path ending in .html")
    page = render(summary, max_image_steps=max_image_steps or MAX_IMAGE_STEPS)
    return atomic_write_text(target, page)


def write_fit_report(trainer: Any, result: dict[str, Any], started: float) -> Path | None:
    """End of `fit` (rank 0): record the environment and this invocation's wall time, then write the page.
    Never raises: the run is already saved, a report problem is one warning line."""
    try:
        from taskbridge.report.runinfo import record_session

        # the step this invocation started from, kept by the trainer: the checkpoint it resumed from may be
        # pruned by keep_last before the run ends
        first = int(result.get("first_step", 0))
        record_session(trainer.output_dir, started=started, first_step=first, last_step=int(result["step"]),
                       device=trainer.device, world_size=trainer.dist.world_size,
                       resumed_from=result.get("resumed_from"), interrupted=bool(result.get("interrupted")))
        return write_report(trainer.output_dir)
    except Exception as err:  # noqa: BLE001 - the training result matters more than its page
        warnings.warn(f"run report not written ({type(err).__name__}: {err}); "
                      f"retry with: taskbridge report {trainer.output_dir}", stacklevel=2)
        return None
