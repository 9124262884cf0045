"""Weights by name: resolved from $TASKBRIDGE_WEIGHTS, then the cache, then a checked download.

Each entry declares where the file comes from, its sha256 and licence, and the architecture it
belongs to, so a number reported with these weights can be traced to the exact file.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


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


class ChecksumError(RuntimeError):
    """A weights file does not have the declared sha256."""


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
    """$TASKBRIDGE_WEIGHTS (os.pathsep-separated directories), then the cache directory."""
    roots = [Path(p).expanduser() for p in os.environ.get("TASKBRIDGE_WEIGHTS", "").split(os.pathsep) if p]
    return [*roots, cache_dir()]


def cache_dir() -> Path:
    base = os.environ.get("TASKBRIDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "taskbridge"
    )
    return Path(base) / "weights"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(name: str, *, download: bool = True, verify: bool = True) -> Path:
    """Return a local path for weights `name`, downloading into the cache if allowed."""
    spec = weight_spec(name)
    candidates: list[Path] = []
    for root in search_roots():
        candidates += [root / spec.filename]
        if spec.subdir:
            candidates.append(root / spec.subdir / spec.filename)
    for path in candidates:
        if path.is_file():
            if verify:
                check_sha256(spec, path)
            return path
    target = cache_dir() / spec.filename
    if download and spec.url:
        try:
            _download(spec, target)
            return target
        except (OSError, ChecksumError) as err:
            reason = f" Download from {spec.url} failed: {err}."
    else:
        reason = " No download URL is declared." if not spec.url else " Downloads are disabled."
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
    """Download `spec.url` next to `target`; only a file that passes `check_sha256` becomes `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        torch.hub.download_url_to_file(str(spec.url), tmp, progress=True)
        check_sha256(spec, Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_state(name_or_path: str | os.PathLike[str], **resolve_kwargs: Any) -> Any:
    """Load a checkpoint safely (`weights_only=True`) by hub name or explicit path."""
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) in _SPECS:
            path = resolve(str(name_or_path), **resolve_kwargs)
        else:
            raise WeightsNotFoundError(
                f"'{name_or_path}' is neither an existing file nor a known weights name "
                f"({', '.join(weight_names())})"
            )
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
        filename="yolov5n_state_dict.pt",
        subdir="yolov5n_coco",
        sha256="6718ce254c1677dddb7f25d220c09e01573ab9f57dbc7d80a4a1afb6383bfeb8",
        license="GPL-3.0 (weights of YOLOv5 v6.x; research use)",
        architecture="YOLOv5n v6 (COCO-80), plain state dict + architecture dict",
        url=None,
        notes="It is the official yolov5n.pt (v6.0 release asset) re-saved as plain tensors; "
        "see docs/weights.md for the one-time conversion.",
    )
)
for _depth, _sha in (
    ("20", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    ("56", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
):
    _file = f"resnet{_depth}-{_sha[:8]}.th"
    register_weights(
        WeightSpec(
            name=f"cifar-resnet{_depth}",
            filename=_file,
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
        subdir="retinaface_weights",
        sha256="ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
        license="MIT",
        architecture="RetinaFace, MobileNet-0.25 backbone, 5 landmarks (WIDER FACE), biubug6 key layout",
        url=f"{_GH}/biubug6/Face-Detector-1MB-with-landmark/raw/2b07565/weights/mobilenet0.25_Final.pth",
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
