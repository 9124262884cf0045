"""Reading and writing images as RGB float tensors in [0, 1], whatever the file holds.

Grayscale, palette, RGBA, 16-bit and EXIF-rotated files are normal inputs; a corrupt or
truncated file raises `ImageReadError` naming the file, never a crash deep inside a worker.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """The file is not a readable image; the message names it and says what to do."""


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    """HWC float32 RGB in [0, 1] from any PIL mode, keeping 16-bit precision."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "I":  # 32-bit int; PNG 16-bit grey often lands here
        arr = np.asarray(img, dtype=np.int64).astype(np.float32)
        scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.repeat(np.clip(arr / scale, 0, 1)[..., None], 3, axis=2)
    if mode == "F":  # float TIFF: intensities in [0, 1]; 8- or 16-bit values stored as floats are rescaled
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        top = float(arr.max(initial=0))
        integral = bool(np.all(arr == np.round(arr)))
        if top > 1.0 and integral and top <= 255:
            arr = arr / 255.0
        elif top > 1.0 and integral and top <= 65535:
            arr = arr / 65535.0
        elif top > 1.0:
            warnings.warn(f"float image with values up to {top:g}: values above 1 are clipped", stacklevel=3)
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        arr = np.asarray(img, dtype=np.float32) / 255.0
        rgb, alpha = arr[..., :3], arr[..., 3:4]
        return rgb * alpha + (1.0 - alpha) * 0.5  # composite over mid-grey: no fake black/white edges
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """HWC uint8 RGB; 8-bit modes directly (no float copy of a huge photo), others through the float path."""
    if img.mode in ("RGB", "L", "CMYK", "YCbCr") or (img.mode == "P" and "transparency" not in img.info):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.round(_to_float_rgb(img) * 255.0).astype(np.uint8)


def read_image(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read an image file as a CHW RGB tensor, float32 in [0, 1] or (`dtype=torch.uint8`) 8-bit, EXIF
    orientation applied. The 8-bit form is what huge photos are read as: a quarter of the memory."""
    path = Path(path)
    return decode_image(path, str(path), dtype)


def decode_image(source: Path | BinaryIO, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`read_image` of a file or of bytes already in memory (an upload: `io.BytesIO`); `name` goes into errors."""
    convert = _to_uint8_rgb if dtype == torch.uint8 else _to_float_rgb
    try:
        with Image.open(source) as img:
            img.load()  # forces decoding: truncated files fail here, not later
            img = ImageOps.exif_transpose(img) or img
            arr = convert(img)
    except FileNotFoundError:
        raise
    except Exception as err:  # any decoder failure (a PIL plugin may raise anything, e.g. an ImportError)
        raise ImageReadError(f"{name}: not a readable image ({type(err).__name__}: {err}). Remove or replace the "
                             "file.") from err
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f"{name}: image has zero size")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def try_read_image(path: str | os.PathLike[str], on_error: str = "skip") -> torch.Tensor | None:
    """`read_image`, or None with a warning naming the file when `on_error='skip'`."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    try:
        return read_image(path)
    except ImageReadError as err:
        if on_error == "raise":
            raise
        warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
        return None


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """HWC uint8: round(255 x), half to even (numpy's and torch's rounding, as the reference protocol saves);
    an 8-bit tensor is taken as it is."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a CHW image tensor with 1 or 3 channels, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        u8 = image.detach().cpu()
        return np.ascontiguousarray((u8.expand(3, -1, -1) if u8.shape[0] == 1 else u8).permute(1, 2, 0).numpy())
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return np.round(img.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str], folder: bool = False) -> None:
    """Give a temporary file (or folder) the permissions of a normally created one, flush it to disk,
    and rename it into place: a crash leaves either the old file or the whole new one, never half."""
    os.chmod(tmp, (0o777 if folder else 0o666) & ~UMASK)  # mkstemp/mkdtemp create 0600/0700
    if not folder:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # the rename itself is durable once the folder's entry is
        dir_fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically (temp file, fsync, rename), with normal permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_image(image: torch.Tensor, path: str | os.PathLike[str], quality: int = 95) -> Path:
    """Write a CHW [0, 1] tensor atomically (temp file then rename); the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(to_uint8_hwc(image))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix or ".png")
    os.close(fd)
    try:
        kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
        pil.save(tmp, **kwargs)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def list_images(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Sorted image files under `folder`; a clear error when it holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no images with suffix {', '.join(IMAGE_SUFFIXES)}")
    return files
