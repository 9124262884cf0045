"""Deterministic, disjoint train/val/test splits of a file list, stored as JSON.

A file's place is decided by a hash of ``(seed, its name relative to root)``, not by the order
the filesystem lists files in, so the same seed gives the same split on every machine. Split
sizes are ``round(cumulative fraction * n)`` boundaries. The JSON file is what makes a reported
number reproducible: it is saved next to the results and loaded instead of re-splitting.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskbridge.data.io import list_images

PathLike = str | os.PathLike[str]
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
SPLIT_FORMAT_VERSION = 1


def _keys(files: PathLike | Sequence[PathLike], root: PathLike | None) -> list[str]:
    if isinstance(files, (str, os.PathLike)):
        root = files if root is None else root
        files = list_images(files)
    keys = []
    for f in files:
        p = Path(f)
        if root is not None:
            try:
                p = p.relative_to(Path(root))
            except ValueError as err:
                raise ValueError(f"{f} is not under root {root}") from err
        keys.append(p.as_posix())
    if len(set(keys)) != len(keys):
        raise ValueError("split_files: the file list has duplicates")
    return keys


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    fr = {str(k): float(v) for k, v in fractions.items()}
    if not fr or any(v < 0 for v in fr.values()) or abs(sum(fr.values()) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fr}")
    return fr


def split_files(
    files: PathLike | Sequence[PathLike],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    root: PathLike | None = None,
) -> dict[str, list[str]]:
    """{split name: sorted file names}; disjoint, covering all files, deterministic in `seed`.

    `files` is a folder (names become relative to it) or a list of paths (relative to `root`
    when given, else kept as written).
    """
    fr = _check_fractions(fractions)
    keys = _keys(files, root)
    order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    n, out, start, cum = len(order), {}, 0, 0.0
    names = list(fr)
    for i, name in enumerate(names):
        cum += fr[name]
        end = n if i == len(names) - 1 else min(n, int(round(cum * n)))
        out[name] = sorted(order[start:end])
        start = end
    return out


def save_split(
    split: Mapping[str, Sequence[str]],
    path: PathLike,
    seed: int | None = None,
    fractions: Mapping[str, float] | None = None,
    root: PathLike | None = None,
) -> Path:
    """Write the split (and how it was made) as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": SPLIT_FORMAT_VERSION,
        "seed": seed,
        "fractions": dict(fractions) if fractions is not None else None,
        "root": str(root) if root is not None else None,
        "counts": {k: len(v) for k, v in split.items()},
        "splits": {k: list(v) for k, v in split.items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)
    return path


def load_split(path: PathLike) -> dict[str, list[str]]:
    """Read a split JSON written by `save_split`; errors name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        splits = doc["splits"]
        out = {str(k): [str(f) for f in v] for k, v in splits.items()}
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a split file written by save_split ({err!r})") from err
    seen: set[str] = set()
    for files in out.values():
        dup = seen.intersection(files)
        if dup:
            raise ValueError(f"{path}: splits overlap on {sorted(dup)[:3]}")
        seen.update(files)
    return out


def split_paths(split: Mapping[str, Sequence[str]], root: PathLike) -> dict[str, list[Path]]:
    """Names of a split -> existing paths under `root`; a missing file is an error naming it."""
    out = {}
    for name, files in split.items():
        paths = [Path(root) / f for f in files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"split '{name}': {len(missing)} file(s) missing under {root}, e.g. {missing[0]}")
        out[name] = paths
    return out


def load_or_create_split(
    path: PathLike,
    files: PathLike | Sequence[PathLike],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    root: PathLike | None = None,
) -> dict[str, list[str]]:
    """Load `path` if it exists (the stored split wins), else split and save it there."""
    path = Path(path)
    if path.is_file():
        return load_split(path)
    split = split_files(files, fractions, seed, root)
    if root is None and isinstance(files, (str, os.PathLike)):
        root = files
    save_split(split, path, seed, fractions, root)
    return split


def split_indices(n: int, fractions: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """Disjoint pools of the indices 0..n-1 of an array data set, named as zero-padded strings
    ("000042") so they can be saved with `save_split` like file names; one rule for every caller
    (engine pools, NUQ fitting on the clean pool, `evaluate --subset`)."""
    return split_files([f"{i:06d}" for i in range(n)], fractions, seed)
