"""Where commands write: never over their inputs, never over earlier results without --overwrite, checked first.

Every command that writes files asks `prepare_output_folder` before it reads anything heavy (an
unwritable or clashing folder fails in one line, not after minutes of work), and maps its inputs to
outputs with `output_paths`, which keeps relative paths and gives files that would land on the same
name (`a.jpg` and `a.png` written as png) distinct names instead of silently writing one of them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from torch import Tensor


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def prepare_output_folder(out: Path, inputs: Sequence[Path] = (), flag: str = "--out") -> Path:
    """Create `out` (with parents) and prove it is writable; refuse an input folder or a folder inside one."""
    out_r = out.expanduser().resolve()
    for src in inputs:
        src_r = src.expanduser().resolve()
        if out_r == src_r:
            raise typer.BadParameter(f"{flag} {out} is the input folder {src}: its files would be overwritten; "
                                     "write somewhere else")
        if src_r.is_dir() and _inside(out_r, src_r):
            raise typer.BadParameter(f"{flag} {out} is inside the input folder {src}: later runs would read the "
                                     "outputs as inputs; write somewhere else")
    if out_r.exists() and not out_r.is_dir():
        raise typer.BadParameter(f"{flag} {out} exists and is not a folder")
    try:
        out_r.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_r, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise typer.BadParameter(f"{flag} {out}: cannot write there ({err.strerror or err})") from None
    return out


def output_paths(files: Sequence[Path], in_root: Path, out_root: Path, suffix: str | None) -> dict[Path, Path]:
    """Input file -> output file: the same relative path under `out_root`, with `suffix` (None keeps each file's).

    Files whose outputs would share a name (same stem, different suffix) keep their suffix in the stem
    (`a.jpg` -> `a_jpg.png`), so nothing is written twice to one place.
    """
    def target(f: Path, keep: bool) -> Path:
        rel = f.relative_to(in_root)
        if suffix is None:
            return out_root / rel
        stem = f"{rel.stem}_{rel.suffix.lstrip('.').lower()}" if keep else rel.stem
        return out_root / rel.parent / f"{stem}.{suffix.lstrip('.')}"

    first = {f: target(f, False) for f in files}
    counts: dict[Path, int] = {}
    for t in first.values():
        counts[t] = counts.get(t, 0) + 1
    mapping = {f: (target(f, True) if counts[t] > 1 else t) for f, t in first.items()}
    inputs = {f.resolve() for f in files}
    clash = [t for t in mapping.values() if t.resolve() in inputs]
    if clash:
        raise typer.BadParameter(f"{clash[0]} is an input and would be overwritten; write to another folder")
    return mapping


def refuse_existing(targets: Sequence[Path], out: Path, overwrite: bool, flag: str = "--overwrite") -> None:
    """One line if files from an earlier run would be replaced and the user did not ask for it."""
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise typer.BadParameter(f"{len(existing)} file(s) under {out} would be replaced (e.g. {existing[0].name}); "
                                 f"pass {flag} or choose an empty folder")


def fresh_folder(path: Path) -> Path:
    """`path` if it holds nothing yet, else the first free `path-2`, `path-3`, ... (default result folders)."""
    if not path.exists() or not any(path.iterdir()):
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}-{n}")).exists() and any(candidate.iterdir()):
        n += 1
    return candidate


def fresh_file(path: Path) -> Path:
    """`path` if free, else the first free `stem-2.suffix`, `stem-3.suffix`, ... (default result files)."""
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def refuse_input_as_output(target: Path, inputs: Sequence[Path], flag: str) -> None:
    """One line if a result file would replace one of the command's inputs, or is a folder."""
    if target.is_dir():
        raise typer.BadParameter(f"{flag} {target} is a folder; give a file name")
    resolved = target.expanduser().resolve()
    if any(resolved == f.resolve() for f in inputs):
        raise typer.BadParameter(f"{flag} {target} is one of the inputs and would be overwritten; write elsewhere")


class Skips:
    """One skip policy for every command: a bad input is skipped (or, with --no-skip-bad, stops the
    command) in one line naming it; what was skipped and why goes into the command's JSON output."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.items: list[dict[str, str]] = []

    def bad(self, path: Path | str, reason: str) -> None:
        """Record (or refuse) one bad input; `reason` is the one-line error that names the file."""
        if not self.skip_bad:
            raise typer.BadParameter(f"{reason} (--skip-bad to continue past it)")
        if any(item["file"] == str(path) for item in self.items):
            return  # met again (e.g. by the next row of a table): reported once
        from tqdm import tqdm

        tqdm.write(f"skipped: {reason}", file=sys.stderr)  # above a running progress bar, not inside it
        self.items.append({"file": str(path), "reason": reason})

    def summary(self) -> str:
        return f"; skipped {len(self.items)} (listed in the JSON report)" if self.items else ""


def skip_option(default: bool = True):  # noqa: ANN201 - a typer option
    return typer.Option(default, "--skip-bad/--no-skip-bad",
                        help="Skip unreadable or unusable inputs, naming each (listed in the JSON report); "
                             "--no-skip-bad stops at the first.")


def write_each(files: Sequence[Path], mapping: dict[Path, Path], skips: Skips, apply: Callable, what: str,
               desc: str) -> dict[str, str]:
    """Each input read as 8 bits, `apply(image, input path)`-ed, saved to its mapped output: {input: output}
    of those written.

    8-bit photos keep huge inputs at a quarter of the memory of floats. An unreadable input, or one
    `apply` fails on (e.g. out of memory), goes to `skips` in one line naming it (`what` failed ...).
    """
    import torch
    from tqdm import tqdm

    from taskbridge.data.io import ImageReadError, read_image, save_image

    written: dict[str, str] = {}
    for path in tqdm(files, desc=desc, unit="img"):
        try:
            image = read_image(path, dtype=torch.uint8)
        except ImageReadError as err:
            skips.bad(path, str(err))
            continue
        try:
            with torch.no_grad():
                out = apply(image, path)
        except (RuntimeError, ValueError) as err:
            skips.bad(path, f"{path}: {what} failed on its {image.shape[-1]}x{image.shape[-2]} pixels "
                            f"({str(err).splitlines()[0]})")
            continue
        written[str(path)] = str(save_image(out.cpu(), mapping[path]))
    return written


SIDE_BY_SIDE = "_side_by_side"  # stem suffix of the comparison pictures (evaluate-quality leaves them out)
LABEL_STRIP = 18  # pixels of the white strip above each panel that names it
PANEL_HEIGHT = 1080  # comparison pictures of larger photos are scaled down to this height: a preview, not a result


def side_by_side_paths(mapping: dict[Path, Path]) -> dict[Path, Path]:
    """Input -> `<output stem>_side_by_side.png` next to its output; refuses a name an output already takes."""
    sides = {f: t.with_name(f"{t.stem}{SIDE_BY_SIDE}.png") for f, t in mapping.items()}
    taken = {t.resolve() for t in mapping.values()} | {f.resolve() for f in mapping}
    clash = [t for t in sides.values() if t.resolve() in taken]
    if clash:
        raise typer.BadParameter(f"--side-by-side: {clash[0]} is also an input or output name; rename that file or "
                                 "drop --side-by-side")
    return sides


def side_by_side(panels: Sequence[tuple[str, Tensor]], gap: int = 8, max_height: int = PANEL_HEIGHT) -> Tensor:
    """8-bit [3, H, W] pictures in a row (input | stage | ... | output), each under a strip naming it.

    All panels take the last one's height (at most `max_height`), keeping their aspect, so a restorer that
    upscales is compared at its output's scale; a panel already at that height is copied pixel for pixel.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw, ImageFont

    height = min(int(panels[-1][1].shape[-2]), max_height)
    sized: list[np.ndarray] = []
    for _, image in panels:
        image = image.detach().cpu()
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        h, w = image.shape[-2:]
        width = max(1, round(w * height / h))
        if (h, w) != (height, width):
            image = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True,
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        sized.append(image.to(torch.uint8).permute(1, 2, 0).numpy())
    total = sum(a.shape[1] for a in sized) + gap * (len(sized) - 1)
    canvas = np.full((LABEL_STRIP + height, total, 3), 255, dtype=np.uint8)
    x, starts = 0, []
    for a in sized:
        canvas[LABEL_STRIP:, x:x + a.shape[1]] = a
        starts.append(x)
        x += a.shape[1] + gap
    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for (label, _), x0 in zip(panels, starts, strict=True):
        draw.text((x0 + 4, 3), label, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def write_report(path: Path, report: dict) -> Path:
    """The command's JSON report, written atomically next to its outputs."""
    import json

    from taskbridge.data.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1, default=str))
    return path
