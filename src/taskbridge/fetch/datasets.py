"""Data sets by name: manifests of public files pinned to a commit, fetched into the data root.

A data set's name is its folder name under the data root (`dawn_fog`, `coco8`, ...), so a recipe
path such as `coco8/images/train` means the same thing whether the folder came from the project's
shared data or from `taskbridge fetch coco8`. A fetch downloads into `<root>/.<name>.fetching/` and
renames it to `<root>/<name>` once every file has its sha256: a folder under its own name is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from taskbridge.fetch.download import DownloadError, download_file, offline, sha256_of

MARKER = ".taskbridge-fetched.json"


class DataNotFoundError(FileNotFoundError):
    """A registered data set is absent and cannot be fetched now; the message says what to run, and from where."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data set folder
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataSetSpec:
    name: str
    licence: str
    licence_short: str
    description: str
    repo: str  # github.com/owner/name
    commit: str
    files: tuple[DataFile, ...]
    not_fetched: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def source(self) -> str:
        """Short form for tables: github.com/owner/name@commit7."""
        return f"{self.repo}@{self.commit[:7]}"

    @property
    def source_url(self) -> str:
        """The folder of the repository at the pinned commit that holds the files (for messages)."""
        prefix = os.path.commonpath([f.url.split(f"/raw/{self.commit}/", 1)[1] for f in self.files])
        prefix = prefix if len(self.files) > 1 else str(PurePosixPath(prefix).parent)
        return f"https://{self.repo}/tree/{self.commit}/{prefix}".rstrip("/.")


@lru_cache(maxsize=1)
def _registry() -> dict[str, DataSetSpec]:
    out: dict[str, DataSetSpec] = {}
    for entry in sorted(resources.files("taskbridge.fetch").joinpath("manifests").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json") or entry.name.startswith("_"):
            continue
        m = json.loads(entry.read_text(encoding="utf-8"))
        out[m["name"]] = DataSetSpec(
            name=m["name"], licence=m["licence"], licence_short=m.get("licence_short", m["licence"]), description=m.get("description", ""),
            repo=m["source"]["repo"], commit=m["source"]["commit"],
            files=tuple(DataFile(**f) for f in m["files"]),
            not_fetched=tuple(sorted(m.get("not_fetched", {}).items())),
        )
    return out


@lru_cache(maxsize=1)
def not_fetchable() -> dict[str, str]:
    """Shared data folders that no public file reproduces byte for byte: name -> why, and how it was made."""
    text = resources.files("taskbridge.fetch").joinpath("manifests", "_not_fetchable.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def data_set_names() -> list[str]:
    return sorted(_registry())


def data_set(name: str) -> DataSetSpec:
    reg = _registry()
    if name not in reg:
        why = f" ({not_fetchable()[name]})" if name in not_fetchable() else ""
        raise KeyError(f"unknown data set '{name}'{why}. Known: {', '.join(sorted(reg))}")
    return reg[name]


def human_size(n: int) -> str:
    """Bytes as '25.1 MB' / '44 KB' (fetch messages and `fetch --list`)."""
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} KB"


def missing_files(spec: DataSetSpec, folder: Path, *, hash_check: bool = True) -> list[DataFile]:
    """Files of the manifest absent from `folder` or with other bytes (size, then sha256 if `hash_check`)."""
    bad = []
    for f in spec.files:
        p = folder / f.path
        if not p.is_file() or p.stat().st_size != f.size or (hash_check and sha256_of(p) != f.sha256):
            bad.append(f)
    return bad


def status(name: str, root: Path) -> str:
    """'found' (every file of the manifest present with its size), 'incomplete' or 'missing', in `root`."""
    spec, folder = data_set(name), root / name
    if not folder.is_dir():
        return "missing"
    return "incomplete" if missing_files(spec, folder, hash_check=False) else "found"


def _cold_message(spec: DataSetSpec, root: Path, why: str) -> str:
    return (f"data set '{spec.name}' is not in {root} and {why}: run `taskbridge fetch {spec.name}` where "
            f"downloads are allowed (source: {spec.source_url}, {len(spec.files)} files, {human_size(spec.size)}), "
            f"or set TASKBRIDGE_DATA to a folder that holds {spec.name}/")


def fetch_data_set(name: str, root: Path, *, progress: bool = True, announce: bool = True) -> tuple[Path, bool]:
    """Make `<root>/<name>` hold every file of the manifest; returns (folder, whether anything was downloaded).

    An existing folder is checked file by file (size and sha256) and only the missing or different
    files are downloaded; an absent one is built in a staging folder and renamed when whole.
    """
    spec = data_set(name)
    root = Path(root)
    folder = root / name
    existing = folder.is_dir()
    work = folder if existing else root / f".{name}.fetching"
    todo = missing_files(spec, work) if work.is_dir() else list(spec.files)
    if not todo:
        if not existing:
            _finish(spec, work, folder)
        return folder, False
    if offline():
        raise DataNotFoundError(_cold_message(spec, root, "downloads are off (TASKBRIDGE_OFFLINE=1 or --offline)"))
    total = sum(f.size for f in todo)
    if announce:
        tqdm.write(f"fetching data set '{name}' ({len(todo)} files, {human_size(total)}) from {spec.source_url} "
                   f"into {folder}", file=sys.stderr)
    try:
        work.mkdir(parents=True, exist_ok=True)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            for f in todo:
                download_file(f.url, work / f.path, sha256=f.sha256, size=f.size, progress=bar)
    except (DownloadError, OSError) as err:
        raise DataNotFoundError(f"{_cold_message(spec, root, f'the download failed ({err})')}") from None
    if not existing:
        _finish(spec, work, folder)
    return folder, True


def _finish(spec: DataSetSpec, work: Path, folder: Path) -> None:
    """Record what was fetched (for provenance) and move the whole folder into place."""
    (work / MARKER).write_text(json.dumps({"name": spec.name, "source": spec.repo, "commit": spec.commit,
                                           "files": len(spec.files)}, indent=1) + "\n")
    try:
        os.replace(work, folder)
    except OSError:  # another process finished first: keep theirs
        if not folder.is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)


def fetch_if_missing(root: Path, rel: str | os.PathLike[str]) -> Path | None:
    """Automatic fetch on first use: `rel` (a recipe path relative to the data root) starts with a registered
    data set that `root` does not hold: fetch it. Returns the folder when it fetched, else None."""
    parts = PurePosixPath(str(rel).replace(os.sep, "/")).parts
    if not parts or parts[0] not in _registry() or (Path(root) / parts[0]).exists():
        return None
    folder, _ = fetch_data_set(parts[0], Path(root))
    return folder
