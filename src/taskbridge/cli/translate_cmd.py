"""`taskbridge translate --ckpt RUN --in DIR --out DIR`: apply a trained run to a folder of photos.

The run is applied as its `InferenceModel` (the same stage `taskbridge evaluate --translator` uses):
full-resolution output as the VaT evaluation does it (REFERENCE 1.9), at the run's working size
unless `--size` says otherwise: translate a copy resized to the working size (square, aspect not
kept), take the change r = T(x_s) - x_s, upsample r bilinearly to the photo's own size, add it and
clamp. `--no-residual` upsamples the output itself instead; `--size 0` translates at full
resolution. File names (and sub-folders) are kept. `--reference IMG` renders every photo in the style
of one image, for methods that take one (Hierarchy Flow; otherwise the run's mean style of domain B).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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


def register(app: typer.Typer) -> None:
    @app.command("translate")
    def translate_cmd(
        ctx: typer.Context,
        ckpt: str = typer.Option(..., "--ckpt", help="Checkpoint dir, a run's checkpoints/ dir, or its output dir."),
        in_dir: Path = typer.Option(..., "--in", help="Folder of degraded images (searched recursively)."),
        out_dir: Path = typer.Option(None, "--out", help="Output folder (not inside --in; default runs/translate/"
                                     "<in folder>, numbered -2, -3 ... when taken); names and sub-folders are kept."),
        size: int = typer.Option(None, "--size", help="Working size (square; default: the run's inference.working_size); "
                                 "0 = full resolution."),
        residual: bool = typer.Option(None, "--residual/--no-residual", help="Add the upsampled change or upsample the "
                                      "output (default: the run's inference.residual)."),
        prefer: str = typer.Option("best", "--prefer", help="For a run folder: 'best' (validation-selected) or 'last'."),
        reference: Path = typer.Option(None, "--reference", help="Style/reference image for methods that take one "
                                       "(Hierarchy Flow); default: the run's mean style of domain B."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        skip_bad: bool = skip_option(),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace files an earlier run wrote under --out."),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that can only be unpickled (e.g. an ultralytics .pt); loading them runs their code."),
        pictures: bool = typer.Option(False, "--side-by-side", help="Also (besides each result) write "
                                      "<stem>_side_by_side.png next to it: input | the run's restorer alone (if it "
                                      f"owns one) | translated, each panel labelled, at most {PANEL_HEIGHT} px high."),
    ) -> None:
        """Translate every image of a folder with a trained method (full-resolution output)."""
        from taskbridge.hub import trusting_pickles

        ctx.with_resource(trusting_pickles(trust_pickle))

        from taskbridge.checkpoint import CheckpointError
        from taskbridge.data.io import ImageReadError, list_images, read_image
        from taskbridge.engine.device import resolve_device
        from taskbridge.inference import load_inference_model

        if prefer not in ("best", "last"):
            raise typer.BadParameter("--prefer must be 'best' or 'last'")
        if size is not None and size < 0:
            raise typer.BadParameter("--size must be >= 0")
        out_dir = out_dir or fresh_folder(Path("runs/translate") / in_dir.resolve().name)
        prepare_output_folder(out_dir, [in_dir])
        files = list_images(in_dir)
        mapping = output_paths(files, in_dir, out_dir, None)
        refuse_existing(list(mapping.values()), out_dir, overwrite)
        sides = side_by_side_paths(mapping) if pictures else {}
        refuse_existing(list(sides.values()), out_dir, overwrite)
        try:
            dev = resolve_device(device)
            model = load_inference_model(ckpt, device=dev, prefer=prefer, working_size=-1 if size is None else size,
                                         residual=residual)
        except (FileNotFoundError, CheckpointError, ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        ref = None
        if reference is not None:  # read and sized once, not per photo
            try:
                ref = model.prepare_reference(read_image(reference).to(dev))
            except (ImageReadError, OSError, ValueError) as err:
                typer.echo(f"error: --reference {reference}: {getattr(err, 'strerror', None) or err}", err=True)
                raise typer.Exit(2) from err
        owns = model.owns()
        typer.echo(f"translator {owns.get('path')} (step {owns.get('step')}); {len(files)} images; "
                   f"working size {owns['working_size']}, residual {owns['residual']}"
                   + (f", restorer {owns['restorer']} inside" if owns["restorer"] else ""))
        skips = Skips(skip_bad)
        alone = model.restorer if pictures else None

        def apply(image: Tensor, path: Path) -> Tensor:
            # 8-bit in and out: huge photos are translated in bands of rows (at the run's working size)
            x = image.to(dev)
            out = model.translate_uint8(x, ref)
            if pictures:
                from taskbridge.data.io import save_image
                from taskbridge.inference.tiling import restore_uint8

                out = out.cpu()  # once: the picture and the written result share it
                panels = [("input", image)]
                if alone is not None:  # what the restorer the run owns does on its own, at full resolution
                    panels.append((f"{owns['restorer']} alone", restore_uint8(alone, x).cpu()))
                panels.append((f"translated ({owns['method']})", out))
                save_image(side_by_side(panels), sides[path])
            return out

        written = write_each(files, mapping, skips, apply, "the model", "translate")
        write_report(out_dir / "translate.json", {"command": "translate", "model": owns, "input": str(in_dir),
                                                   "reference": None if reference is None else str(reference),
                                                   "written": written,
                                                   "side_by_side": {str(k): str(v) for k, v in sides.items()},
                                                   "skipped": skips.items})
        typer.echo(f"wrote {len(written)} image(s) to {out_dir}{skips.summary()}")
