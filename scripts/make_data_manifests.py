"""Write the data set manifests (src/taskbridge/fetch/manifests/*.json) from the shared data folders.

Each shared data folder that is a byte-for-byte copy of files in a public GitHub repository gets one
manifest: for every file present locally, its URL at the pinned commit, size and sha256, so that
`taskbridge fetch NAME` rebuilds exactly that folder from the source. Only files present here are
listed (e.g. the 200 DAWN photos kept, not the 100 held out). Files the folder's curator wrote
(README.md, derived lists) are not upstream: they are left out and named under "not_fetched".

With `--verify-git DIR` each file is also checked against the repository at the pinned commit
(DIR/<owner>+<repo>/repo, a bare clone): its git blob id must equal the upstream one, so a mapping
mistake or a modified copy fails here instead of at a user's download.

    python scripts/make_data_manifests.py [--data ../shared/data] [--verify-git /work/.mirror]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "taskbridge" / "fetch" / "manifests"


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name on github.com
    commit: str  # full 40-hex commit
    licence: str
    licence_short: str  # for tables
    #: local relative prefix -> upstream path prefix; the longest matching local prefix wins
    layout: dict[str, str]
    description: str
    #: curator-written files: not in the upstream repository, so not fetched (path -> why)
    not_fetched: dict[str, str] = field(default_factory=dict)


CURATOR_README = "written by the curator of the shared folder (provenance notes); not in the upstream repository"

SOURCES = [
    Source(
        name="dawn_fog",
        repo="ankitaS11/Vechicle-Detection-in-Adverse-Weather",
        commit="7037faa3177e37aba8e4e27862d2522ea4eaf453",
        licence="DAWN (Kenk & Hassaballah, Mendeley Data 10.17632/766ygrbt8y), believed CC BY 4.0; "
                "no licence file in the GitHub copy",
        licence_short="CC BY 4.0 (believed)",
        layout={"images/": "DAWN/Fog/", "voc_xml/": "DAWN/Fog/Fog_PASCAL_VOC/",
                "yolo_labels/": "DAWN/Fog/Fog_YOLO_darknet/"},
        description="200 of the 300 DAWN Fog photos (real fog/haze/mist traffic scenes) with VOC and YOLO boxes",
        not_fetched={"README.md": CURATOR_README},
    ),
    Source(
        name="coco256_street",
        repo="lightly-ai/coco128_yolo",
        commit="6d6f7a059ea63efffdbe48aca2d52c04d4c510e9",
        licence="COCO: annotations CC BY 4.0, images under their Flickr licences (COCO terms of use)",
        licence_short="COCO terms (CC BY 4.0 labels)",
        layout={"images/": "images/", "labels/": "object_detection/labels/"},
        description="149 COCO train2017/val2017 photos with persons or vehicles, YOLO labels (80 classes)",
        not_fetched={"README.md": CURATOR_README,
                     "vehicle_images.txt": "a list the curator derived from the labels (images with a "
                                           "bicycle/car/motorcycle/bus/truck box); not in the upstream repository"},
    ),
    Source(
        name="coco8",
        repo="LilianHollard/LeYOLO",
        commit="a2d551baa673dd9dc2dfb19597fe44e9abb64f3e",
        licence="Ultralytics COCO8 (AGPL-3.0 LICENSE in the folder); images COCO, CC BY 4.0 per COCO terms",
        licence_short="AGPL-3.0 + COCO terms",
        layout={"": "datasets/coco8/"},
        description="Ultralytics COCO8: 4+4 COCO train2017 photos with YOLO labels",
        not_fetched={"README.md": CURATOR_README},
    ),
    Source(
        name="hazy_unlabeled_aodnet",
        repo="TheFairBear/PyTorch-Image-Dehazing",
        commit="dc26717cde24748e27ffc9d050564e295654b90d",
        licence="MIT",
        licence_short="MIT",
        layout={"": "test_images/"},
        description="22 hazy test photos (no labels) of an AOD-Net re-implementation",
        not_fetched={"README.md": CURATOR_README},
    ),
    Source(
        name="lowlight_unlabeled_sci",
        repo="vis-opt-group/SCI",
        commit="9d28a3f1237df248bb765e7fee16f7c4ac7dbeee",
        licence="MIT",
        licence_short="MIT",
        layout={"": "data/"},
        description="29 real low-light photos (no labels) of the SCI repository (ExDark photos left out)",
        not_fetched={"README.md": CURATOR_README},
    ),
    Source(
        name="faces_fairface",
        repo="thlaiquid-ai/demographic-test-images",
        commit="3225e93be7349143e5496eda971c65969efe7c35",
        licence="CC BY 4.0 (FairFace authors, Kärkkäinen & Joo, WACV 2021)",
        licence_short="CC BY 4.0",
        layout={"images/": "fairface/", "ground_truth.json": "fairface/ground_truth.json", "LICENSE": "LICENSE"},
        description="540 FairFace face crops (448 px), balanced by gender and age, with attributes",
        not_fetched={"README.md": CURATOR_README},
    ),
]

#: shared folders that are not fetched by name as data sets: weights (taskbridge.hub) or derived data
NOT_DATA_SETS = {
    "cifar10_test_subset": "derived: the first 1,017 images parsed out of a truncated CIFAR-10 test_batch pickle "
                           "(zhi-fangZhang/idpl_gen @ 0626f9d, data/cifar-10-batches-py/test_batch) and saved as npz; "
                           "no public file holds these bytes, so place it yourself (see its README)",
}


def upstream_path(src: Source, rel: str) -> str:
    for local in sorted(src.layout, key=len, reverse=True):
        if rel == local or (local.endswith("/") or local == "") and rel.startswith(local):
            return src.layout[local] + rel[len(local):]
    raise SystemExit(f"{src.name}/{rel}: no layout rule maps it to {src.repo}; add one to SOURCES")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def upstream_blobs(git_dir: Path, commit: str) -> dict[str, str]:
    out = subprocess.run(["git", "-C", str(git_dir), "ls-tree", "-r", commit], check=True, capture_output=True,
                         text=True).stdout
    blobs = {}
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        blobs[path] = meta.split()[2]
    return blobs


def manifest(src: Source, folder: Path, verify_git: Path | None) -> dict:
    blobs = None
    if verify_git is not None:
        git_dir = verify_git / src.repo.replace("/", "+") / "repo"
        if not git_dir.is_dir():
            raise SystemExit(f"{git_dir}: no clone of {src.repo} to verify {src.name} against")
        blobs = upstream_blobs(git_dir, src.commit)
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in src.not_fetched:
            continue
        data = path.read_bytes()
        up = upstream_path(src, rel)
        if blobs is not None and blobs.get(up) != git_blob_id(data):
            raise SystemExit(f"{folder / rel}: differs from {src.repo}@{src.commit[:7]}:{up} "
                             f"({'missing upstream' if up not in blobs else 'other bytes'})")
        files.append({"path": rel, "url": f"https://github.com/{src.repo}/raw/{src.commit}/{up}",
                      "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return {
        "name": src.name, "kind": "data", "licence": src.licence, "licence_short": src.licence_short,
        "description": src.description,
        "source": {"repo": f"github.com/{src.repo}", "commit": src.commit},
        "not_fetched": src.not_fetched, "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--verify-git", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for src in SOURCES:
        m = manifest(src, args.data / src.name, args.verify_git)
        (args.out / f"{src.name}.json").write_text(json.dumps(m, indent=1, ensure_ascii=False) + "\n")
        total = sum(f["size"] for f in m["files"])
        print(f"{src.name}: {len(m['files'])} files, {total / 1e6:.1f} MB"
              f"{' (verified against git)' if args.verify_git else ''}")
    (args.out / "_not_fetchable.json").write_text(json.dumps(NOT_DATA_SETS, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
