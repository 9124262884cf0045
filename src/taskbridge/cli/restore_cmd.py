"""`taskbridge restore`: run a frozen restorer over a folder of images, keeping the folder layout."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from taskbridge.cli.outputs import (
    PANEL_HEIGHT,
    Skips,
    fresh_folder,
    output_paths,
    prepare_output_folder,
    refuse_existing,
    side_by_side,
    side_by_side_paths,
    skip_option,
    write_each,
    write_report,
)

if TYPE_CHECKING:
    from torch import Tensor


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs -> kwargs; values are Python literals when they parse (1, 0.5, None, True)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"option '{item}' must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def register(app: typer.Typer) -> None:
    @app.command("restore")
    def restore(
        restorer: str = typer.Option(..., "--restorer", "-r", help="Registered restorer, e.g. sci-medium, aodnet, dcp, identity."),
        src: Path = typer.Option(..., "--in", "-i", help="Folder of degraded images (searched recursively)."),
        dst: Path = typer.Option(None, "--out", "-o", help="Output folder (not inside --in; default runs/restore/"
                                 "<in folder>-<restorer>, numbered -2, -3 ... when taken); the folder structure is kept."),
        ext: str = typer.Option("png", help="Output format (png, jpg, ...) or 'keep' for the input suffix."),
        option: list[str] = typer.Option(None, "--option", "-s", help="Restorer option key=value (repeatable)."),
        device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
        skip_bad: bool = skip_option(),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace files an earlier run wrote under --out."),
        tile: int = typer.Option(1024, "--tile", min=64, help="Photos larger than this (pixels per side) are restored "
                                 "in tiles of it, with enough overlap that the result equals the untiled one."),
        pictures: bool = typer.Option(False, "--side-by-side", help="Also (besides each result) write "
                                      "<stem>_side_by_side.png next to it: input | restored, each panel labelled, "
                                      f"at the result's height (at most {PANEL_HEIGHT} px)."),
    ) -> None:
        """Restore every image under --in with a frozen restorer and write the results under --out (+ restore.json)."""
        from taskbridge.data.io import list_images, save_image
        from taskbridge.inference.tiling import restore_uint8
        from taskbridge.registry import RESTORERS

        dst = dst or fresh_folder(Path("runs/restore") / f"{src.resolve().name}-{restorer}")
        prepare_output_folder(dst, [src])
        files = list_images(src)
        mapping = output_paths(files, src, dst, None if ext == "keep" else ext)
        refuse_existing(list(mapping.values()), dst, overwrite)
        options = parse_options(option)
        try:
            model = RESTORERS.create(restorer, **options).to(device)
        except (TypeError, ValueError) as err:
            raise typer.BadParameter(f"--restorer {restorer}: {err}") from None
        sides = side_by_side_paths(mapping) if pictures else {}
        refuse_existing(list(sides.values()), dst, overwrite)
        skips = Skips(skip_bad)

        def apply(image: Tensor, path: Path) -> Tensor:
            # in tiles for large photos: memory stays bounded, the result equals the untiled one
            out = restore_uint8(model, image.to(device), tile=tile)
            if pictures:
                out = out.cpu()  # once: the picture and the written result share it
                save_image(side_by_side([("input", image), (restorer, out)]), sides[path])
            return out

        written = write_each(files, mapping, skips, apply, f"restorer '{restorer}'", f"restore [{restorer}]")
        renamed = [str(t) for f, t in mapping.items() if t.stem != f.stem]
        write_report(dst / "restore.json", {"command": "restore", "restorer": restorer, "options": options,
                                             "input": str(src), "written": written,
                                             "side_by_side": {str(k): str(v) for k, v in sides.items()}, "renamed": renamed,
                                             "skipped": skips.items})
        note = f"; {len(renamed)} renamed to keep same-stem files apart" if renamed else ""
        typer.echo(f"restored {len(written)} image(s) with '{restorer}' into {dst}{note}{skips.summary()}")
