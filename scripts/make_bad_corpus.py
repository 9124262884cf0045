"""The bad-input corpus: every kind of file a user may hand taskbridge, good and bad, built from real photos.

`build_corpus(root, photo)` writes (deterministically, from one real photo):

* `images/`: odd but valid images (1x1, 3x20000, 20000x3, 16-bit grey, RGBA, palette, CMYK, grey,
  EXIF-rotated, WebP, float TIFF, the same stem twice, unicode and space names) and unreadable ones
  (truncated JPEG, zero bytes, text named .jpg) - `CORPUS_BAD_IMAGES` lists those;
* `detection/`: the DAWN layout (images/ + voc_xml/) with good labels, labels that are fine after
  clipping or dropping (negative, outside, inverted boxes, unknown classes, BOM + CRLF), and broken
  ones (empty, garbage, missing fields, NaN coordinates, an XML entity bomb) - `CORPUS_BAD_LABELS`;
* `yolo/`: the Ultralytics layout with malformed lines; `nolabels/`: images without any label folder;
* `weights/`: a truncated and an empty .pth and a pickle whose unpickling would write `PWNED` next to it;
* `large/`: one large square photo (4000 px by default; restored in tiles).

    python scripts/make_bad_corpus.py OUT [--photo ../shared/data/dawn_fog/images/foggy-001.jpg]

writes it to a folder to look at; the corpus test builds it in a temporary folder and runs every
command over it (tests/cli/test_bad_input_corpus.py, docs/reliability.md).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS_BAD_IMAGES = ("truncated.jpg", "zero.png", "text.jpg")
CORPUS_BAD_LABELS = ("empty", "garbage", "missing_fields", "nan_coords", "entity_bomb")
CORPUS_FIXABLE_LABELS = ("negative_box", "outside_box", "inverted_box", "unknown_class", "bom_crlf")
PAYLOAD_MARKER = "PWNED"


def _photo(photo: Path, size: tuple[int, int]) -> Image.Image:
    with Image.open(photo) as im:
        return im.convert("RGB").resize(size, Image.BILINEAR)


def _images(out: Path, base: Image.Image) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base.save(out / "good.jpg", quality=92)
    base.save(out / "same_stem.jpg", quality=92)
    base.transpose(Image.FLIP_LEFT_RIGHT).save(out / "same_stem.png")
    base.resize((1, 1)).save(out / "one_pixel.png")
    base.resize((20000, 3)).save(out / "thin_3x20000.png")
    base.resize((3, 20000)).save(out / "tall_20000x3.png")
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(out / "grey16.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    rgba.save(out / "rgba.png")
    base.convert("P", palette=Image.ADAPTIVE, colors=64).save(out / "palette.png")
    base.convert("CMYK").save(out / "cmyk.jpg", quality=92)
    base.convert("L").save(out / "grey.jpg", quality=92)
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise when displayed
    base.save(out / "exif_rotated.jpg", quality=92, exif=exif)
    base.save(out / "image.webp", quality=90)
    f = np.asarray(base.convert("L"), dtype=np.float32) / 255.0 * 3.0  # float intensities up to 3 (HDR-like)
    Image.fromarray(f, mode="F").save(out / "float.tif")
    base.save(out / "ünïcødé näme.jpg", quality=92)
    base.save(out / "with space.png")
    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=92)
    (out / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (out / "zero.png").write_bytes(b"")
    (out / "text.jpg").write_text("this is not an image\n", encoding="utf-8")


def _voc(objects: str, w: int, h: int) -> str:
    return (f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}"
            "</annotation>")


def _obj(name: str, box: tuple[float, float, float, float]) -> str:
    x0, y0, x1, y1 = box
    return (f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object>")


def _detection(out: Path, base: Image.Image) -> None:
    images, labels = out / "images", out / "voc_xml"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    w, h = base.size
    car = (0.2 * w, 0.4 * h, 0.6 * w, 0.9 * h)
    xml = {
        "good": _voc(_obj("car", car) + _obj("person", (10, 10, 60, 120)), w, h),
        "negative_box": _voc(_obj("car", (-20, -10, 0.5 * w, 0.5 * h)), w, h),
        "outside_box": _voc(_obj("car", (w + 10, h + 10, w + 50, h + 60)) + _obj("car", car), w, h),
        "inverted_box": _voc(_obj("car", (0.6 * w, 0.9 * h, 0.2 * w, 0.4 * h)) + _obj("car", car), w, h),
        "unknown_class": _voc(_obj("spaceship", car) + _obj("car", car), w, h),
        "empty": "",
        "garbage": "<annotation><object><name>car</name><bndbox><xmin>1",
        "missing_fields": _voc("<object><name>car</name></object>", w, h),
        "nan_coords": _voc(_obj("car", (float("nan"), 1, 10, 10)), w, h),
        "entity_bomb": ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                                  for i in range(1, 10))
                        + ']><annotation><size><width>10</width><height>10</height></size>'
                        "<object><name>&lol9;</name></object></annotation>"),
    }
    for stem, text in xml.items():
        base.save(images / f"{stem}.jpg", quality=92)
        data = text.encode("utf-8")
        if stem == "bom_crlf":
            continue
        (labels / f"{stem}.xml").write_bytes(data)
    base.save(images / "bom_crlf.jpg", quality=92)
    (labels / "bom_crlf.xml").write_bytes(b"\xef\xbb\xbf" + _voc(_obj("car", car), w, h).replace("><", ">\r\n<").encode())
    (images / "truncated.jpg").write_bytes((images / "good.jpg").read_bytes()[:500])
    (labels / "truncated.xml").write_text(xml["good"], encoding="utf-8")


def _yolo(out: Path, base: Image.Image) -> None:
    images, labels = out / "images" / "val", out / "labels" / "val"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    lines = {
        "good": "2 0.4 0.65 0.4 0.5\n0 0.1 0.2 0.05 0.2\n",
        "malformed": "2 0.4 0.65\n",
        "not_numbers": "car x y w h\n",
        "negative_size": "2 0.4 0.65 -0.4 0.5\n",
    }
    for stem, text in lines.items():
        base.save(images / f"{stem}.jpg", quality=92)
        (labels / f"{stem}.txt").write_text(text, encoding="utf-8")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling it would write the marker: the proof that code ran
        return (Path.write_text, (self.marker, "code ran"))


def _weights(out: Path, real: Path | None) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    (out / "zero.pth").write_bytes(b"")
    if real is not None and real.is_file():
        data = real.read_bytes()
        (out / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": _Payload(out / PAYLOAD_MARKER)}, out / "payload.pt")


def build_corpus(root: str | os.PathLike[str], photo: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
                 size: tuple[int, int] = (320, 240), large: int = 4000) -> Path:
    """Write the whole corpus under `root` (see the module docstring); `weights` is a real .pth to truncate,
    `large` the side of the square photo in `large/` (12000 for the memory check of docs/reliability.md)."""
    root = Path(root)
    (root / "large").mkdir(parents=True, exist_ok=True)
    Image.MAX_IMAGE_PIXELS = None
    _photo(Path(photo), (large, large)).save(root / "large" / f"large_{large}.jpg", quality=90)
    base = _photo(Path(photo), size)
    _images(root / "images", base)
    _detection(root / "detection", base)
    _yolo(root / "yolo", base)
    nolabels = root / "nolabels" / "images"
    nolabels.mkdir(parents=True, exist_ok=True)
    base.save(nolabels / "a.jpg", quality=92)
    _weights(root / "weights", Path(weights) if weights else None)
    return root


def main() -> None:
    import argparse

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--photo", type=Path, default=shared / "dawn_fog" / "images" / "foggy-001.jpg")
    ap.add_argument("--weights", type=Path, default=shared / "aodnet_weights" / "dehazer.pth")
    ap.add_argument("--large", type=int, default=4000, help="side of the large photo (e.g. 12000)")
    args = ap.parse_args()
    print(build_corpus(args.out, args.photo, args.weights, large=args.large))


if __name__ == "__main__":
    main()
