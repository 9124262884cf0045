"""One checked, resumable download; the switches that govern every download (mirror, offline).

Why not torch.hub's downloader: it cannot resume, ignores a mirror, and writes a temporary file that
a crash leaves behind under a random name. Here a file is written to `<target>.part` (kept if the
connection drops, so the next attempt continues it with an HTTP Range request), checked against its
sha256, and only then renamed to `<target>`: a file at its final path is always a verified one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

CHUNK = 1 << 16
USER_AGENT = "taskbridge-fetch/1 (+https://github.com)"


class ChecksumError(RuntimeError):
    """A file (downloaded or found) does not have the declared sha256; the message names file and source."""


class DownloadError(OSError):
    """A download could not complete (HTTP error, refused connection, too many interruptions)."""


class OfflineError(DownloadError):
    """A download was needed while downloads are switched off (TASKBRIDGE_OFFLINE=1 or --offline)."""


def cache_home() -> Path:
    """`$TASKBRIDGE_CACHE`, else `$XDG_CACHE_HOME/taskbridge`, else `~/.cache/taskbridge`."""
    base = os.environ.get("TASKBRIDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "taskbridge")
    return Path(base).expanduser()


def shared_data_dir() -> Path | None:
    """`../shared/data` from the working directory when it exists (the project's layout), else None."""
    p = Path.cwd() / ".." / "shared" / "data"
    return p.resolve() if p.is_dir() else None


def offline() -> bool:
    """True when TASKBRIDGE_OFFLINE is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get("TASKBRIDGE_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def mirror_url(url: str) -> str:
    """With TASKBRIDGE_MIRROR=BASE, `https://host/path` becomes `BASE/host/path` (proxies, air-gapped mirrors)."""
    base = os.environ.get("TASKBRIDGE_MIRROR", "").strip().rstrip("/")
    if not base:
        return url
    m = re.match(r"^https?://(.+)$", url)
    return f"{base}/{m.group(1)}" if m else url


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _open(url: str, start: int, timeout: float) -> Any:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310


def _content_range_start(resp: Any) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "") or "")
    return int(m.group(1)) if m else None


def _transfer(url: str, part: Path, size: int | None, timeout: float, bar: tqdm | None) -> None:
    """Append the rest of `url` to `part` (Range from its size); a 200 answer restarts it from byte 0."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start >= size:
        if start == size:
            return  # complete already: the checks decide
        part.unlink()
        start = 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the range starts at or past the end: start over
            part.unlink()
            if bar is not None:
                bar.update(-start)
            resp = _open(url, 0, timeout)
            start = 0
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        mode = "ab"
        if start and (status != 206 or _content_range_start(resp) != start):
            if bar is not None:  # the server ignored the Range: discard what we had, take the whole file
                bar.update(-start)
            start, mode = 0, "wb"
        elif not start:
            mode = "wb"
        with open(part, mode) as f:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        expected = resp.headers.get("Content-Length")
    got = part.stat().st_size
    if expected is not None and got != start + int(expected):
        raise http.client.IncompleteRead(b"", start + int(expected) - got)


def download_file(
    url: str,
    target: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    check: Callable[[Path], None] | None = None,
    progress: bool | tqdm = True,
    timeout: float = 60.0,
    retries: int = 3,
    desc: str | None = None,
) -> Path:
    """Download `url` (rewritten by the mirror) to `target` through `<target>.part`, resuming a partial one.

    `sha256` and `size` are checked before the rename; `check(part_path)` may add its own check (it
    raises ChecksumError). A dropped connection is resumed up to `retries` times; the .part stays for
    a later call if it still fails. `progress` is True (own bar), False, or a shared tqdm bar.
    """
    target = Path(target)
    if offline():
        raise OfflineError(f"{url}: downloads are off (TASKBRIDGE_OFFLINE=1 or --offline); nothing fetched for {target}")
    real = mirror_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    own_bar = progress is True
    bar: tqdm | None = progress if isinstance(progress, tqdm) else None
    if own_bar:
        have = part.stat().st_size if part.exists() else 0
        bar = tqdm(total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                   desc=desc or target.name, dynamic_ncols=True)
    try:
        for attempt in range(retries + 1):
            try:
                _transfer(real, part, size, timeout, bar)
                break
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, urllib.error.URLError,
                    http.client.HTTPException) as err:
                if isinstance(err, urllib.error.HTTPError):
                    raise DownloadError(f"{real}: HTTP {err.code} {err.reason}") from None
                if attempt == retries:
                    why = getattr(err, "reason", None) or err
                    if part.exists() and part.stat().st_size == 0:  # nothing arrived: nothing to resume
                        part.unlink()
                    kept = f"{part} is kept and the next try resumes it" if part.exists() else "nothing was received"
                    raise DownloadError(f"{real}: {type(err).__name__}: {why} (after {retries + 1} attempts; "
                                        f"{kept})") from None
        _verify(part, url, target, sha256, size, check)
        os.replace(part, target)
    finally:
        if own_bar and bar is not None:
            bar.close()
    return target


def _verify(part: Path, url: str, target: Path, sha256: str | None, size: int | None,
            check: Callable[[Path], None] | None) -> None:
    """Size, sha256 and the caller's check, before the rename; a failure removes the .part."""
    try:
        got_size = part.stat().st_size
        if size is not None and got_size != size:
            raise ChecksumError(f"{url}: got {got_size} bytes, expected {size}; nothing placed at {target}")
        if sha256:
            got = sha256_of(part)
            if got != sha256:
                raise ChecksumError(f"{url}: sha256 {got} does not match the expected {sha256}; nothing placed at "
                                    f"{target} (a changed source, or a mirror or proxy serving other bytes)")
        if check is not None:
            try:
                check(part)
            except ChecksumError as err:
                raise ChecksumError(f"{url}: refused, nothing placed at {target}: {err}") from None
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
