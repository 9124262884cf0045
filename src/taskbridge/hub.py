"""Weights by name: resolved from $TASKBRIDGE_WEIGHTS (else ../shared/data), the cache, then a checked download.

Each entry declares where the file comes from, its sha256 and licence, and the architecture it
belongs to, so a number reported with these weights can be traced to the exact file.
"""

from __future__ import annotations

import contextvars
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskbridge.fetch.download import ChecksumError, DownloadError, download_file, offline, shared_data_dir
from taskbridge.fetch.download import cache_home as _cache_home
from taskbridge.fetch.download import sha256_of as sha256_of

__all__ = ["ChecksumError", "WeightSpec", "WeightsLoadError", "WeightsNotFoundError", "load_state", "locate", "resolve"]


class WeightsNotFoundError(FileNotFoundError):
    """No local copy and no way to download: the message says which file to place where."""


class WeightsLoadError(RuntimeError):
    """A weights file exists but cannot be read (empty, truncated, corrupt, or holding code); names the file."""


class UntrustedPickleError(RuntimeError):
    """A file could only be opened by unpickling it (running whatever code it holds) and nobody trusted it."""


_TRUST_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("trust_pickle", default=False)


@contextmanager
def trusting_pickles(trust: bool = True) -> Iterator[None]:
    """Within this block, files that can only be unpickled may be opened (the CLI's --trust-pickle).

    Trust is given by the person running a command, by name; it is never read from a recipe or from a
    run's recorded configuration, so opening someone else's run cannot run their code.
    """
    token = _TRUST_PICKLE.set(bool(trust))
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


def require_pickle_trust(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, in one line naming the file, unless the user opted in with --trust-pickle."""
    if not _TRUST_PICKLE.get():
        raise UntrustedPickleError(
            f"{path}: {what} is a pickle, and loading it runs whatever code it contains. If you trust this file, "
            "add --trust-pickle to the command (a recipe or a run's checkpoint never grants that)")


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str  # file name searched for (also as <subdir>/<filename> under each root)
    sha256: str
    license: str
    architecture: str
    url: str | None = None
    subdir: str = ""  # folder name under a weights root, e.g. the shared data layout
    notes: str = ""
    #: when no full sha256 can be confirmed from a published source (sha256 ""): the hash prefix the
    #: publisher puts in the file name (torchvision's convention); the full hash is pinned on first use
    sha256_prefix: str = ""
    size: int = 0  # bytes, when known (checked on download; 0 = unknown)
    #: another entry whose file stands in when this one's is not found locally (before any download),
    #: e.g. the re-saved YOLOv5n state dict for the official checkpoint
    fallback: str = ""

    @property
    def source(self) -> str:
        """Short form of the URL for tables: github.com/owner/name@commit7, a release tag, or the URL."""
        return source_label(self.url)


def source_label(url: str | None) -> str:
    if not url:
        return "-"
    parts = url.split("/")
    if len(parts) > 6 and parts[2] == "github.com" and parts[5] == "raw":
        return f"github.com/{parts[3]}/{parts[4]}@{parts[6][:7]}"
    if len(parts) > 7 and parts[2] == "github.com" and parts[5:7] == ["releases", "download"]:
        return f"github.com/{parts[3]}/{parts[4]} release {parts[7]}"
    return url


_SPECS: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    if spec.name in _SPECS:
        raise ValueError(f"weights '{spec.name}' registered twice")
    _SPECS[spec.name] = spec
    return spec


def weight_names() -> list[str]:
    return sorted(_SPECS)


def weight_spec(name: str) -> WeightSpec:
    if name not in _SPECS:
        raise KeyError(f"unknown weights '{name}'. Known: {', '.join(weight_names())}")
    return _SPECS[name]


def search_roots() -> list[Path]:
    """$TASKBRIDGE_WEIGHTS (os.pathsep-separated directories), else ../shared/data from the working
    directory when it exists (the project's layout, so no setup is needed there), then the cache."""
    roots = [Path(p).expanduser() for p in os.environ.get("TASKBRIDGE_WEIGHTS", "").split(os.pathsep) if p]
    if not roots:
        shared = shared_data_dir()
        roots = [shared] if shared is not None else []
    return [*roots, cache_dir()]


def cache_dir() -> Path:
    """`$TASKBRIDGE_CACHE/weights` (default ~/.cache/taskbridge/weights): where downloads go."""
    return _cache_home() / "weights"


def _find(spec: WeightSpec) -> Path | None:
    for root in search_roots():
        for path in (root / spec.filename, root / spec.subdir / spec.filename if spec.subdir else None):
            if path is not None and path.is_file():
                return path
    return None


def locate(name: str) -> Path | None:
    """The local file `resolve` would return without downloading (its own file, else its fallback's), or None.
    Nothing is checked or downloaded: for listings such as `taskbridge list weights`."""
    hit = _local(weight_spec(name))
    return hit[1] if hit else None


def _local(spec: WeightSpec) -> tuple[WeightSpec, Path] | None:
    """The entry's own file, else its fallback's, with the entry whose sha256 applies to it."""
    for candidate in (spec, weight_spec(spec.fallback) if spec.fallback else None):
        path = _find(candidate) if candidate is not None else None
        if path is not None:
            return candidate, path
    return None


def resolve(name: str, *, download: bool = True, verify: bool = True) -> Path:
    """Return a local path for weights `name`, downloading into the cache if allowed.

    Order: $TASKBRIDGE_WEIGHTS (else ../shared/data), the cache, the `fallback` entry's file in those
    places, then a download from the declared URL (unless `download=False` or TASKBRIDGE_OFFLINE=1).
    """
    spec = weight_spec(name)
    if hit := _local(spec):
        if verify:
            check_sha256(*hit)
        return hit[1]
    target = cache_dir() / spec.filename
    if download and spec.url and not offline():
        try:  # a ChecksumError (the server sent other bytes) propagates as it is: nothing was placed
            _download(spec, target)
            return target
        except OSError as err:
            reason = f" Download from {spec.url} failed: {err}."
    elif not spec.url:
        reason = " No download URL is declared."
    else:
        reason = (f" Downloads are disabled{' (TASKBRIDGE_OFFLINE=1)' if offline() else ''}; "
                  f"`taskbridge fetch {name}` downloads it from {spec.url}.")
    where = ", ".join(str(r) for r in search_roots())
    raise WeightsNotFoundError(
        f"weights '{name}' ({spec.architecture}, licence {spec.license}) not found.{reason} "
        f"Place '{spec.filename}' in a directory listed in $TASKBRIDGE_WEIGHTS "
        f"(or in <dir>/{spec.subdir or '.'}/), or in {cache_dir()}. Searched: {where}. {spec.notes}".strip()
    )


def pins_file() -> Path:
    return cache_dir() / "pinned_sha256.json"


def check_sha256(spec: WeightSpec, path: Path) -> None:
    """The declared sha256; without one, the published prefix and the hash pinned on first use."""
    got = sha256_of(path)
    fix = f"Replace the file with the original ({spec.url or 'see docs/weights.md'})."
    if spec.sha256:
        if got != spec.sha256:
            raise ChecksumError(f"{path}: sha256 {got} does not match the declared {spec.sha256} for '{spec.name}'. {fix}")
        return
    if spec.sha256_prefix and not got.startswith(spec.sha256_prefix):
        raise ChecksumError(f"{path}: sha256 {got} does not start with the published {spec.sha256_prefix} for "
                            f"'{spec.name}'. {fix}")
    pins_path = pins_file()
    pins = json.loads(pins_path.read_text()) if pins_path.is_file() else {}
    if spec.name in pins and pins[spec.name] != got:
        raise ChecksumError(f"{path}: sha256 {got} differs from {pins[spec.name]}, pinned for '{spec.name}' when it "
                            f"was first used (in {pins_path}). {fix}")
    if spec.name not in pins:
        pins[spec.name] = got
        pins_path.parent.mkdir(parents=True, exist_ok=True)
        pins_path.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")


def _download(spec: WeightSpec, target: Path) -> None:
    """Download `spec.url` to `target` (resumable, through TASKBRIDGE_MIRROR if set); only a file that passes
    `check_sha256` (declared hash, published prefix or pin) becomes `target`."""
    if not spec.url:
        raise DownloadError(f"weights '{spec.name}' declare no download URL")
    import sys

    from tqdm import tqdm

    tqdm.write(f"fetching weights '{spec.name}' from {spec.url} into {target}", file=sys.stderr)
    if spec.sha256:  # the downloader's own check names URL, expected and got hashes
        download_file(spec.url, target, sha256=spec.sha256, size=spec.size or None, desc=spec.name)
    else:  # published prefix and pin on first use
        download_file(spec.url, target, size=spec.size or None, check=lambda part: check_sha256(spec, part),
                      desc=spec.name)


def weights_path(name_or_path: str | os.PathLike[str], **resolve_kwargs: Any) -> Path:
    """An existing file as it is, else a known weights name resolved (found, checked, downloaded)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if str(name_or_path) in _SPECS:
        return resolve(str(name_or_path), **resolve_kwargs)
    raise WeightsNotFoundError(
        f"'{name_or_path}' is neither an existing file nor a known weights name ({', '.join(weight_names())})")


def load_state(name_or_path: str | os.PathLike[str], **resolve_kwargs: Any) -> Any:
    """Load a checkpoint safely (`weights_only=True`) by hub name or explicit path."""
    path = weights_path(name_or_path, **resolve_kwargs)
    if path.stat().st_size == 0:
        raise WeightsLoadError(f"{path}: the file is empty (0 bytes); download or copy it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # pickles with code objects are refused by design
        raise WeightsLoadError(
            f"{path}: cannot be loaded with weights_only=True (it holds objects other than tensors: "
            f"{str(err).splitlines()[0]}). Re-save it as a plain state dict."
        ) from None
    except Exception as err:  # truncated, corrupt, or not a PyTorch file at all
        raise WeightsLoadError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                               f"{str(err) or 'the file ends early'}); download or copy it again") from None


_GH = "https://github.com"
for _level, _sha in (
    ("easy", "b17326a26a93bf187ecbab217f9d3c57467a8b56020d4d9ff600ba257bbffb36"),
    ("medium", "4ff1e7e66e8f18114f790e5085ca4c936f0858e329e7ad1cb65b8aa09a9c6916"),
    ("difficult", "657fa1f280cae1035df0d5cbe628e91f2d0f28660df608a3fa3f7e9a71da5a13"),
):
    register_weights(
        WeightSpec(
            name=f"sci-{_level}",
            filename=f"{_level}.pt",
            size=43967,
            subdir="sci_weights",
            sha256=_sha,
            license="MIT",
            architecture="SCI (Self-Calibrated Illumination, CVPR 2022), enhance branch",
            url=f"{_GH}/vis-opt-group/SCI/raw/9d28a3f1237df248bb765e7fee16f7c4ac7dbeee/weights/{_level}.pt",
        )
    )
register_weights(
    WeightSpec(
        name="aodnet",
        filename="dehazer.pth",
        size=8613,
        subdir="aodnet_weights",
        sha256="79409b63bf019d6c7ca6903883a8635d5723c25406f74903751bd7459462a53b",
        license="MIT",
        architecture="AOD-Net (ICCV 2017), PyTorch re-implementation trained on NYU2 synthetic haze",
        url=f"{_GH}/TheFairBear/PyTorch-Image-Dehazing/raw/dc26717cde24748e27ffc9d050564e295654b90d/snapshots/dehazer.pth",
    )
)
register_weights(
    WeightSpec(
        name="yolov5n-coco",
        filename="yolov5n.pt",
        subdir="yolov5n_coco",
        sha256="4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3",
        size=4062133,
        license="GPL-3.0 (weights of YOLOv5 v6.0; research use)",
        architecture="YOLOv5n v6 (COCO-80), official checkpoint (read without the YOLOv5 code)",
        url=f"{_GH}/ultralytics/yolov5/releases/download/v6.0/yolov5n.pt",
        fallback="yolov5n-coco-converted",
        notes="The official release asset; a re-saved yolov5n_state_dict.pt (yolov5n-coco-converted) found "
        "locally is used instead when yolov5n.pt is not.",
    )
)
register_weights(
    WeightSpec(
        name="yolov5n-coco-converted",
        filename="yolov5n_state_dict.pt",
        subdir="yolov5n_coco",
        sha256="6718ce254c1677dddb7f25d220c09e01573ab9f57dbc7d80a4a1afb6383bfeb8",
        size=3874575,
        license="GPL-3.0 (weights of YOLOv5 v6.x; research use)",
        architecture="YOLOv5n v6 (COCO-80), plain state dict + architecture dict (legacy re-save)",
        url=None,
        notes="The official yolov5n.pt re-saved as plain tensors (legacy; see docs/weights.md).",
    )
)
for _size in ("s", "m", "l", "x"):
    register_weights(
        WeightSpec(
            name=f"yolov5{_size}-coco",
            filename=f"yolov5{_size}.pt",
            subdir=f"yolov5{_size}_coco",
            sha256="",
            license="GPL-3.0 (weights of YOLOv5 v6.0; research use)",
            architecture=f"YOLOv5{_size} v6 (COCO-80), official checkpoint",
            url=f"{_GH}/ultralytics/yolov5/releases/download/v6.0/yolov5{_size}.pt",
            notes="No published sha256: the hash is pinned on first use (docs/weights.md).",
        )
    )
for _depth, _sha, _size in (
    ("20", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 1099231),
    ("56", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 3471733),
):
    _file = f"resnet{_depth}-{_sha[:8]}.th"
    register_weights(
        WeightSpec(
            name=f"cifar-resnet{_depth}",
            filename=_file,
            size=_size,
            subdir="cifar10_resnet_weights",
            sha256=_sha,
            license="BSD-2-Clause",
            architecture=f"CIFAR-10 ResNet{_depth} (He et al. 2016, option-A shortcuts)",
            url=f"{_GH}/akamaster/pytorch_resnet_cifar10/raw/d5489e8995e81e91ce6b1d69dcc98ad579b0b153/pretrained_models/{_file}",
        )
    )
register_weights(
    WeightSpec(
        name="vgg19-imagenet",
        filename="vgg19-dcbb9e9d.pth",
        sha256="",
        sha256_prefix="dcbb9e9d",
        license="torchvision pretrained weights (pytorch/vision terms)",
        architecture="VGG-19 (ImageNet classification), torchvision state dict; features up to relu4_1 are used",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        notes="The feature network of AdaIN and Hierarchy Flow's losses (features: {type: vgg19}).",
    )
)
register_weights(
    WeightSpec(
        name="retinaface-mobilenet0.25",
        filename="mobilenet0.25_Final.pth",
        size=1789735,
        subdir="retinaface_weights",
        sha256="ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
        license="MIT",
        architecture="RetinaFace, MobileNet-0.25 backbone, 5 landmarks (WIDER FACE), biubug6 key layout",
        url=f"{_GH}/biubug6/Face-Detector-1MB-with-landmark/raw/2b075657aef954b9426f938ac7fce100b6910fe6/weights/mobilenet0.25_Final.pth",
        notes="The face detector of the gfpgan restorer (faces/retinaface.py).",
    )
)
for _version, _release in (("1.3", "v1.3.0"), ("1.4", "v0.0.0")):
    register_weights(
        WeightSpec(
            name=f"gfpgan-v{_version}",
            filename=f"GFPGANv{_version}.pth",
            sha256="",
            license="Apache-2.0 (TencentARC/GFPGAN; see its LICENSE for the StyleGAN2 parts)",
            architecture=f"GFP-GAN v{_version} (GFPGANv1Clean, 512 px, channel multiplier 2), 'params_ema'",
            url=f"{_GH}/TencentARC/GFPGAN/releases/download/{_release}/GFPGANv{_version}.pth",
            notes="About 350 MB; no published sha256: the hash is pinned on first use (docs/weights.md).",
        )
    )
