"""`taskbridge degrade`: write a synthetic hazy / low-light copy of an image folder.

Each image gets its own generator seeded from ``(--seed, its relative path)``, so an image's
degradation does not depend on which other files are in the folder or on their order. The
parameters used per image go to ``<out>/degrade.json`` next to the images.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Any

import typer

from taskbridge.cli.outputs import (
    Skips,
    fresh_folder,
    output_paths,
    prepare_output_folder,
    refuse_existing,
    skip_option,
    write_report,
)

SIDECAR = "degrade.json"


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> kwargs; values are YAML scalars/lists (``beta=[0.05,0.1]``, ``scale=heavy``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--param must look like key=value, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise typer.BadParameter(f"--param {item!r}: cannot parse value ({err})") from err
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def image_seed(seed: int, relative: str) -> int:
    """Per-image seed from the run seed and the file's relative path (stable across machines)."""
    return (int(seed) * 1_000_003 + zlib.crc32(relative.encode("utf-8"))) % (2**63 - 1)


def degrade_folder(
    kind: str,
    in_dir: Path,
    out_dir: Path,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    ext: str = "same",
    skip_bad: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Degrade every image under `in_dir` into `out_dir` (same relative paths); returns the sidecar."""
    import torch
    from tqdm import tqdm

    from taskbridge.data.io import ImageReadError, list_images, read_image, save_image
    from taskbridge.registry import DEGRADATIONS

    params = dict(params or {})
    degradation = DEGRADATIONS.create(kind, **params)
    files = list_images(in_dir)
    mapping = output_paths(files, in_dir, out_dir, None if ext == "same" else ext)
    refuse_existing([*mapping.values(), out_dir / SIDECAR], out_dir, overwrite)
    skips = Skips(skip_bad)
    sidecar: dict[str, Any] = {"kind": kind, "options": params, "seed": seed, "input": str(in_dir), "images": {},
                               "skipped": skips.items}
    for path in tqdm(files, desc=f"degrade {kind}", unit="img", disable=not progress):
        rel = path.relative_to(in_dir).as_posix()
        try:
            image = read_image(path)
        except ImageReadError as err:
            skips.bad(rel, str(err))
            continue
        s = image_seed(seed, rel)
        g = torch.Generator().manual_seed(s)
        with torch.no_grad():
            out, used = degradation(image.unsqueeze(0), generator=g)
        target = save_image(out[0], mapping[path]).relative_to(out_dir)
        sidecar["images"][target.as_posix()] = {
            "source": rel, "seed": s, **{k: round(float(v[0]), 6) for k, v in used.items()},
        }
    write_report(out_dir / SIDECAR, sidecar)
    return sidecar


def register(app: typer.Typer) -> None:
    @app.command("degrade")
    def degrade_cmd(
        kind: str = typer.Option(..., "--kind", help="Registered degradation: haze, lowlight or face (see `taskbridge list degradation`)."),
        in_dir: Path = typer.Option(..., "--in", help="Folder of clean images (searched recursively)."),
        out_dir: Path = typer.Option(None, "--out", help="Output folder (not inside --in; default runs/degrade/"
                                     "<in folder>-<kind>, numbered -2, -3 ... when taken); relative paths are kept."),
        seed: int = typer.Option(0, "--seed", help="Run seed; each image is seeded from it and its relative path."),
        param: list[str] = typer.Option([], "--param", "-p", help="Degradation option key=value, repeatable (e.g. scale=heavy, gamma=[1.5,5])."),
        ext: str = typer.Option("same", "--ext", help="Output format: same (as input), png or jpg."),
        skip_bad: bool = skip_option(),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace files an earlier run wrote under --out."),
    ) -> None:
        """Write a synthetic degraded copy of an image folder, with the parameters of every image in degrade.json."""
        from taskbridge.registry import DEGRADATIONS, RegistryError

        if kind not in DEGRADATIONS:
            raise typer.BadParameter(str(RegistryError(f"unknown degradation '{kind}'. Available: {', '.join(DEGRADATIONS.names())}")))
        if not in_dir.is_dir():
            raise typer.BadParameter(f"--in {in_dir}: not a folder")
        if ext not in ("same", "png", "jpg", "jpeg"):
            raise typer.BadParameter(f"--ext must be same, png or jpg, got {ext!r}")
        kwargs = parse_params(param)
        try:  # validate the options before touching any file
            DEGRADATIONS.create(kind, **kwargs)
        except (TypeError, ValueError) as err:
            raise typer.BadParameter(str(err)) from err
        out_dir = out_dir or fresh_folder(Path("runs/degrade") / f"{in_dir.resolve().name}-{kind}")
        prepare_output_folder(out_dir, [in_dir])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sidecar = degrade_folder(kind, in_dir, out_dir, seed, kwargs, ext, skip_bad, overwrite)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        typer.echo(
            f"wrote {len(sidecar['images'])} {kind} image(s) to {out_dir} "
            f"({len(sidecar['skipped'])} skipped); parameters in {out_dir / SIDECAR}"
        )
