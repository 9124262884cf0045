"""One self-contained HTML page per run: inline CSS, images as base64 PNG, no script and no external link,
so the file can be mailed, archived next to the run or opened offline and still show everything."""

from __future__ import annotations

import base64
import html
import math
import re
import statistics
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from taskbridge.report.collect import RunSummary, checkpoint_rate, value

MAX_IMAGE_STEPS = 12  # image steps embedded: the first and the newest ones (a long run has hundreds)
#: how image grids are ordered in a row: inputs, intermediate stages, outputs, reconstructions
NAME_ORDER = ("real", "degraded", "input", "restored", "gate", "fused", "fake", "translated", "output", "rec", "idt",
              "clean")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 18px 40px;
color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:18px 0 4px}h2{font-size:1.25em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:1.02em;margin:14px 0 6px}
.sub{color:#666;margin:0 0 10px}
nav a{margin-right:12px;color:#0b63c5;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.92em}
th,td{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f6}
.notes{background:#fff6e0;border:1px solid #f0d48a;padding:6px 12px;border-radius:4px}
.note{color:#8a5a00}
.figs{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0}figcaption{font-size:.85em;color:#555;text-align:center}
.grid-row{display:flex;flex-wrap:wrap;gap:8px;margin:4px 0 10px}
.grid-row img{image-rendering:pixelated;border:1px solid #eee}
details{margin:4px 0;border:1px solid #e4e4e8;border-radius:4px;padding:4px 10px}
summary{cursor:pointer;font-weight:600}
pre{background:#f7f7f9;border:1px solid #e4e4e8;padding:10px;overflow:auto;font-size:.85em;max-height:600px}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any) -> str:
    """Numbers short and aligned; everything else as text."""
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = "".join(f'<td class="n">{esc(fmt(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                        else f"<td>{esc(fmt(c))}</td>" for c in row)
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out) + "</table>"


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG header; None for anything else."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def img(data: bytes, alt: str, upscale_small: bool = False) -> str:
    """An <img> with the PNG inline; tiny grids (CPU test runs) are shown enlarged, pixel-sharp."""
    size = png_size(data)
    attrs = ""
    if size is not None:
        w, h = size
        k = 3 if upscale_small and w < 150 else 2 if upscale_small and w < 320 else 1
        attrs = f' width="{w * k}" height="{h * k}"'
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{esc(alt)}"{attrs}>'


def figure(data: bytes, caption: str, upscale_small: bool = False, show_caption: bool = True) -> str:
    text = f"<figcaption>{esc(caption)}</figcaption>" if show_caption else ""
    return f"<figure>{img(data, caption, upscale_small)}{text}</figure>"


def grid_figure(path: Path, name: str) -> str:
    """One grid of the run's images/ folder; a file that is not a PNG (damaged, emptied) becomes a note naming
    it instead of a broken picture."""
    data = path.read_bytes()
    if png_size(data) is None:
        return f"<p class='note'>images/{esc(path.name)}: not a readable PNG, left out.</p>"
    return figure(data, name, upscale_small=True)


# ---------------------------------------------------------------------------------------------- sections


def section_overview(s: RunSummary) -> str:
    meta = s.meta or {}
    cfg = s.config or {}
    method = (cfg.get("method") or {}).get("type")
    data = meta.get("data") or {}
    rows: list[tuple[str, Any]] = [("run folder", str(s.run_dir)), ("method", method),
                                   ("steps", f"{fmt(s.last_step)} of {fmt(meta.get('total_steps'))}"
                                    if meta.get("total_steps") else s.last_step),
                                   ("seed", meta.get("seed", cfg.get("seed"))),
                                   ("batch size (global)", data.get("batch_size")),
                                   ("training items", data.get("train_size")),
                                   ("processes", meta.get("world_size")),
                                   ("checkpoints", ", ".join(c.name for c in s.checkpoints) or None)]
    if s.best is not None:
        sel = s.best.selected_by or {}
        rows.append(("best checkpoint", f"step {s.best.step}: {sel.get('metric')} = {fmt(sel.get('value'))} "
                                        f"({sel.get('mode')}, split {sel.get('split')})"))
    last = meta.get("metrics") or {}
    losses = {k: v for k, v in last.items() if k.startswith("loss/")}
    if losses:
        rows.append(("last losses", ", ".join(f"{k} {fmt(value(v))}" for k, v in losses.items())))
    if meta.get("nan_skips"):
        rows.append(("non-finite steps skipped (in a row, at the end)", meta["nan_skips"]))
    return "<h2 id='overview'>Overview</h2>" + table((k, v) for k, v in rows if v is not None)


def section_before_after(s: RunSummary) -> str:
    head = "<h2 id='before-after'>Before / after on the validation split</h2>"
    if not s.before_after:
        return head + "<p class='note'>Not recorded: the run has no validation, was stopped early, or ran with " \
                      "<code>--no-report</code>.</p>"
    first = next(iter(s.before_after.values()))
    keys = [k for k in first if not k.startswith(("num_", "seconds"))]
    rows = [(name, *[value(m.get(k)) for k in keys]) for name, m in s.before_after.items()]
    return head + "<p class='sub'>Same split and settings for each row (the selection split, not the test split).</p>" \
        + table(rows, ["", *keys])


def section_curves(s: RunSummary) -> str:
    out = ["<h2 id='curves'>Curves</h2>"]
    try:
        from taskbridge.report.curves import train_figures, val_figures
    except ImportError:  # pragma: no cover - matplotlib is a dependency; a broken install still gets a page
        return out[0] + "<p class='note'>matplotlib is not installed: no curves.</p>"
    val_rows, train_rows = s.rows("val"), s.rows("train")
    if val_rows:
        out.append("<h3>Validation</h3><div class='figs'>")
        out += [figure(png, key, show_caption=False) for key, png in val_figures(val_rows)]
        out.append("</div>")
    if train_rows:
        out.append("<h3>Training (per logged step; long runs: smoothed line over the raw one)</h3><div class='figs'>")
        out += [figure(png, f"{name}/*" if name != "other" else "other scalars", show_caption=False)
                for name, png in train_figures(train_rows)]
        out.append("</div>")
    if not val_rows and not train_rows:
        out.append("<p class='note'>No metrics were logged (see the notes above).</p>")
    return "\n".join(out)


def _stats(xs: Sequence[float]) -> tuple[float, float, float, float, float, float] | None:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return None
    return xs[0], xs[-1], statistics.fmean(xs), statistics.pstdev(xs), min(xs), max(xs)


def section_gate(s: RunSummary) -> str:
    """VaT's gate (the weight of the degraded image in the fusion): what the run recorded of it."""
    if not s.is_vat:
        return ""
    out = ["<h2 id='gate'>Gate (VaT)</h2>",
           "<p class='sub'>gate = weight of the degraded image in the fused input, "
           "I<sub>F</sub> = (1 − g)·restored + g·degraded; about 0.5 at the start.</p>"]
    val_keys = sorted({k for r in s.rows("val") for k in r if "gate" in k})
    if val_keys:
        rows = []
        for k in val_keys:
            st = _stats([value(r[k]) for r in s.rows("val") if k in r])
            if st:
                rows.append((k, *st))
        out.append("<h3>Over the validation split</h3>" + table(rows, ["key", "first", "last", "mean", "std", "min",
                                                                        "max"]))
    else:
        out.append("<p class='note'>This run has no gate over the validation split (a run without validation, "
                   "or one made before validation logged val/gate_mean); "
                   "<code>scripts/vat_gate_stats.py</code> computes it from a checkpoint.</p>")
    train_keys = sorted({k for r in s.rows("train") for k in r if k.startswith(("gate/", "drift/gate"))})
    rows = []
    for k in train_keys:
        st = _stats([value(r[k]) for r in s.rows("train") if k in r])
        if st:
            rows.append((k, *st))
    if rows:
        out.append("<h3>Over the logged training batches</h3>"
                   + table(rows, ["key", "first", "last", "mean over logs", "std over logs", "min", "max"]))
    maps = [(im.step, im.grids["gate"]) for im in s.images if "gate" in im.grids]
    if maps:
        step, path = maps[-1]
        out.append(f"<h3>Gate maps at step {step} (white: degraded image, black: restored)</h3>"
                   + figure(path.read_bytes(), f"gate, step {step}", upscale_small=True))
    return "\n".join(out)


def _domain(name: str) -> str | None:
    """The source image a CycleGAN-style visual comes from: real_A, fake_B, rec_A all start at A."""
    m = re.fullmatch(r"([a-z]+)_([AB])", name)
    if m is None:
        return None
    prefix, side = m.groups()
    return ({"A": "B", "B": "A"}[side]) if prefix == "fake" else side


def _rank(name: str) -> tuple[int, str]:
    head = name.split("_", 1)[0]
    return (NAME_ORDER.index(head) if head in NAME_ORDER else len(NAME_ORDER), name)


def arrange(names: Iterable[str]) -> list[list[str]]:
    """Rows of grid names: real_A, fake_B, rec_A side by side (and the same from B); otherwise one row in
    pipeline order (degraded, restored, gate, fused, translated, ...)."""
    names = sorted(names, key=_rank)
    domains = {n: _domain(n) for n in names}
    if names and all(domains.values()):
        return [r for side in ("A", "B") if (r := [n for n in names if domains[n] == side])]
    return [names] if names else []


def section_images(s: RunSummary, max_steps: int = MAX_IMAGE_STEPS) -> str:
    head = "<h2 id='images'>Image grids</h2>"
    if not s.images:
        return head + "<p class='note'>No image grids were written (train.image_every = 0, or no step reached " \
                      "it).</p>"
    shown = s.images if len(s.images) <= max_steps else [s.images[0], *s.images[-(max_steps - 1):]]
    out = [head, "<p class='sub'>Newest step first (open a step to see it); up to 4 images per grid, as "
                 "<code>images/step_*.png</code> in the run folder.</p>"]
    if len(shown) < len(s.images):
        out.append(f"<p class='note'>{len(s.images) - len(shown)} older image step(s) left out "
                   f"(the first and the {max_steps - 1} newest are shown; all are in images/).</p>")
    for i, im in enumerate(reversed(shown)):
        out.append(f"<details{' open' if i == 0 else ''}><summary>step {im.step}</summary>")
        for row in arrange(im.grids):
            out.append("<div class='grid-row'>" + "".join(grid_figure(im.grids[n], n) for n in row) + "</div>")
        out.append("</details>")
    return "\n".join(out)


def section_timings(s: RunSummary) -> str:
    out = ["<h2 id='timings'>Timings</h2>"]
    sessions = [x for x in (s.run_info or {}).get("sessions", []) if isinstance(x, dict)]
    if sessions:
        rows = [(x.get("started"), x.get("ended"), f"{x.get('first_step')} → {x.get('last_step')}", x.get("wall_s"),
                 x.get("steps_per_s"), "interrupted" if x.get("interrupted") else
                 ("resumed" if x.get("resumed_from") else "")) for x in sessions]
        out.append(table(rows, ["started", "ended", "steps", "wall s", "steps/s", ""]))
        wall = sum(value(x.get("wall_s")) for x in sessions if math.isfinite(value(x.get("wall_s"))))
        steps = sum(max(0, int(x.get("last_step") or 0) - int(x.get("first_step") or 0)) for x in sessions)
        out.append(f"<p>Total: {fmt(steps)} steps in {fmt(round(wall, 1))} s of wall time "
                   f"({fmt(steps / wall) if wall > 0 else '—'} steps/s; validation, image grids and checkpoints "
                   "included).</p>")
    else:
        rate = checkpoint_rate(s.checkpoints)
        if rate is not None:
            sps, steps, seconds = rate
            out.append(f"<p>{fmt(sps)} steps/s between the first and the last kept checkpoint ({steps} steps in "
                       f"{fmt(seconds)} s, from their saved_at stamps).</p>")
        out.append("<p class='note'>Wall time per invocation not recorded (no run_info.json: the run was made "
                   "before <code>fit</code> recorded it, or fit did not finish).</p>")
    val_secs = [value(r.get("val/seconds")) for r in s.rows("val") if "val/seconds" in r]
    if val_secs:
        out.append(f"<p>Validation: {fmt(statistics.fmean(val_secs))} s per pass over {len(val_secs)} passes.</p>")
    return "\n".join(out)


def section_environment(s: RunSummary) -> str:
    out = ["<h2 id='environment'>Environment</h2>"]
    env = (s.run_info or {}).get("environment")
    if isinstance(env, Mapping):
        out.append(table((k, v) for k, v in env.items() if v is not None))
    else:
        meta = s.meta or {}
        out.append(table([("torch", meta.get("torch")), ("processes", meta.get("world_size"))]))
        out.append("<p class='note'>Only what the checkpoint records (no run_info.json).</p>")
    return "\n".join(out)


def section_recipe(s: RunSummary) -> str:
    head = "<h2 id='recipe'>Recipe (resolved, as the run recorded it)</h2>"
    if s.config is None:
        return head + "<p class='note'>Not recorded (no readable checkpoint).</p>"
    import yaml

    text = yaml.safe_dump(s.config, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)
    return head + f"<pre>{esc(text)}</pre>"


def _guarded(part: Callable[[RunSummary], str], s: RunSummary) -> str:
    """A section that cannot be drawn (odd values in a damaged run) becomes a note, not a lost page."""
    try:
        return part(s)
    except Exception as err:  # noqa: BLE001 - every other section is still worth having
        name = getattr(part, "__name__", "section").removeprefix("section_")
        return f"<p class='note'>The {esc(name)} section could not be drawn ({esc(type(err).__name__)}: {esc(err)}).</p>"


def render(s: RunSummary, max_image_steps: int = MAX_IMAGE_STEPS) -> str:
    """The whole page as one string."""
    sections = [_guarded(part, s) for part in (section_overview, section_before_after, section_curves, section_gate,
                                                 lambda s: section_images(s, max_image_steps), section_timings,
                                                 section_environment, section_recipe)]
    nav = [("overview", "Overview"), ("before-after", "Before/after"), ("curves", "Curves"),
           *([("gate", "Gate")] if s.is_vat else []), ("images", "Images"), ("timings", "Timings"),
           ("environment", "Environment"), ("recipe", "Recipe")]
    notes = ("<div class='notes'><b>Notes</b><ul>" + "".join(f"<li>{esc(n)}</li>" for n in s.notes) + "</ul></div>"
             if s.notes else "")
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join([
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(s.name)} — taskbridge run report</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(s.name)}</h1>",
        f"<p class='sub'>taskbridge run report · {esc(s.run_dir)} · step {esc(fmt(s.last_step))} · "
        f"generated {generated}</p>",
        "<nav>" + "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in nav) + "</nav>",
        notes, *sections, "</body></html>", ""])

