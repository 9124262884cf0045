"""`taskbridge fetch`: weights and data sets from their public URLs (played by a loopback server),
sha256-checked, cached, resumable; offline behaviour; automatic fetch on first use; the listings."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.loopback_hosts import LoopbackHosts, routes_from_registry, serve, url_key
from taskbridge import hub
from taskbridge.cli import app
from taskbridge.data.root import data_root
from taskbridge.fetch import datasets
from taskbridge.fetch.download import ChecksumError, part_path

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def server(shared_data: Path) -> Iterator[LoopbackHosts]:
    with serve(routes_from_registry(shared_data)) as hosts:
        yield hosts


@pytest.fixture()
def hosts(server: LoopbackHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoopbackHosts:
    """A cold cache in tmp, no ../shared/data from the working directory, every download through the server."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("TASKBRIDGE_WEIGHTS", "TASKBRIDGE_DATA", "TASKBRIDGE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TASKBRIDGE_MIRROR", server.base_url)
    server.reset()
    return server


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real entry point (user errors -> one line, exit 2)."""
    from taskbridge.cli import main

    monkeypatch.setattr(sys, "argv", ["taskbridge", *argv])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_defaults_point_to_the_cache_without_shared_data(hosts: LoopbackHosts, tmp_path: Path) -> None:
    assert data_root() == (tmp_path / "cache" / "data").resolve()
    assert hub.search_roots() == [tmp_path / "cache" / "weights"]


def test_weight_download_is_checked_then_a_cache_hit(hosts: LoopbackHosts) -> None:
    spec = hub.weight_spec("sci-medium")
    path = hub.resolve("sci-medium")
    assert path == hub.cache_dir() / "medium.pt" and _sha(path) == spec.sha256
    assert hosts.paths() == [url_key(spec.url)]
    hosts.reset()
    assert hub.resolve("sci-medium") == path and hosts.requests == []  # cache hit: the server sees nothing
    res = runner.invoke(app, ["fetch", "sci-medium"])
    assert res.exit_code == 0 and "sci-medium: already present" in res.output and hosts.requests == []


def test_data_set_download_checked_then_a_cache_hit(hosts: LoopbackHosts) -> None:
    res = runner.invoke(app, ["fetch", "coco8"])
    assert res.exit_code == 0, res.output
    folder = data_root() / "coco8"
    spec = datasets.data_set("coco8")
    assert len(hosts.requests) == len(spec.files) == 17
    for f in spec.files:
        assert _sha(folder / f.path) == f.sha256
    assert not (folder / "README.md").exists()  # the curator's notes are not upstream
    assert not list(folder.parent.glob(".coco8.fetching"))
    hosts.reset()
    res = runner.invoke(app, ["fetch", "coco8"])
    assert res.exit_code == 0 and "coco8: already present" in res.output and hosts.requests == []


def test_a_partial_download_is_resumed_with_a_range_request(hosts: LoopbackHosts) -> None:
    spec = hub.weight_spec("yolov5n-coco")
    local = routes_from_registry_file(hosts, spec.url)
    half = local.read_bytes()[: spec.size // 2]
    part = part_path(hub.cache_dir() / spec.filename)
    part.parent.mkdir(parents=True)
    part.write_bytes(half)
    path = hub.resolve("yolov5n-coco")
    assert _sha(path) == spec.sha256 and not part.exists()
    assert hosts.requests == [(url_key(spec.url), f"bytes={len(half)}-")]


def routes_from_registry_file(hosts: LoopbackHosts, url: str | None) -> Path:
    assert url is not None
    return hosts.routes[url_key(url)]


def test_a_dropped_connection_resumes_and_a_server_ignoring_range_restarts(hosts: LoopbackHosts) -> None:
    spec = hub.weight_spec("cifar-resnet20")
    key = url_key(spec.url)
    hosts.drop_after[key] = 300_000
    path = hub.resolve("cifar-resnet20")
    assert _sha(path) == spec.sha256
    assert hosts.requests == [(key, None), (key, "bytes=300000-")]
    # a server that answers a Range request with the whole file (200): the .part restarts from byte 0
    path.unlink()
    hosts.reset()
    hosts.drop_after[key] = 500_000
    hosts.ignore_range = True
    assert _sha(hub.resolve("cifar-resnet20")) == spec.sha256
    assert hosts.requests == [(key, None), (key, "bytes=500000-")]


def test_wrong_bytes_are_refused_in_one_line(hosts: LoopbackHosts, monkeypatch, capsys) -> None:
    spec = hub.weight_spec("aodnet")
    hosts.corrupt.add(url_key(spec.url))
    code, _, err = _main(["fetch", "aodnet"], monkeypatch, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and err.count("error:") == 1 and "error:" in last, err
    assert f"{spec.url}: sha256" in last and f"does not match the expected {spec.sha256}" in last
    assert not (hub.cache_dir() / spec.filename).exists() and not list(hub.cache_dir().glob("*.part"))
    # a data set file: the ChecksumError names the URL, expected and got; nothing placed
    bad = datasets.data_set("hazy_unlabeled_aodnet").files[0]
    hosts.corrupt.add(url_key(bad.url))
    with pytest.raises(ChecksumError, match=f"{bad.url}: sha256 [0-9a-f]{{64}} does not match the expected {bad.sha256}"):
        datasets.fetch_data_set("hazy_unlabeled_aodnet", data_root(), progress=False)
    assert not (data_root() / "hazy_unlabeled_aodnet").exists()
    staging = data_root() / ".hazy_unlabeled_aodnet.fetching"
    assert not (staging / bad.path).exists() and not part_path(staging / bad.path).exists()


def test_offline_warm_cache_works_and_cold_cache_says_what_to_fetch(hosts: LoopbackHosts, monkeypatch, capsys) -> None:
    assert runner.invoke(app, ["fetch", "lowlight_unlabeled_sci", "sci-easy"]).exit_code == 0
    hosts.reset()
    monkeypatch.setenv("TASKBRIDGE_OFFLINE", "1")
    assert hub.resolve("sci-easy").is_file()
    code, out, _ = _main(["fetch", "lowlight_unlabeled_sci", "sci-easy"], monkeypatch, capsys)
    assert code == 0 and out.count("already present") == 2 and hosts.requests == []
    # cold: one line naming the data set, the command and the source
    code, _, err = _main(["fetch", "coco8"], monkeypatch, capsys)
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "'coco8'" in err and "taskbridge fetch coco8" in err
    assert "https://github.com/LilianHollard/LeYOLO/tree/a2d551baa673dd9dc2dfb19597fe44e9abb64f3e/datasets/coco8" in err
    code, _, err = _main(["fetch", "aodnet"], monkeypatch, capsys)
    assert code == 2 and "TASKBRIDGE_OFFLINE=1" in err and "taskbridge fetch aodnet" in err and hub.weight_spec(
        "aodnet").url in err
    monkeypatch.delenv("TASKBRIDGE_OFFLINE")
    code, _, err = _main(["fetch", "--offline", "hazy_unlabeled_aodnet"], monkeypatch, capsys)
    assert code == 2 and "taskbridge fetch hazy_unlabeled_aodnet" in err
    assert hosts.requests == []


def test_fetch_list_and_list_weights_say_found_or_missing(hosts: LoopbackHosts) -> None:
    res = runner.invoke(app, ["fetch", "--list"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line for line in res.output.splitlines() if line and not line.startswith(("name", "data root"))}
    assert "github.com/LilianHollard/LeYOLO@a2d551b" in rows["coco8"] and rows["coco8"].endswith("missing")
    assert "data" in rows["dawn_fog"] and "20.8 MB" in rows["dawn_fog"]
    assert "not fetchable" in rows["cifar10_test_subset"] and "cifar10_test_subset: not fetchable: derived" in res.output
    assert "github.com/ultralytics/yolov5 release v6.0" in rows["yolov5n-coco"]
    res = runner.invoke(app, ["list", "weights"])
    assert res.exit_code == 0
    line = next(ln for ln in res.output.splitlines() if ln.split()[:1] == ["sci-hard"] or ln.split()[:1] == ["sci-easy"])
    assert line.endswith("missing") and "sci_weights/easy.pt" in line and "MIT" in line
    assert runner.invoke(app, ["fetch", "sci-easy", "coco8"]).exit_code == 0
    res = runner.invoke(app, ["list", "weights"])
    line = next(ln for ln in res.output.splitlines() if ln.split()[:1] == ["sci-easy"])
    assert line.endswith(f"found {hub.cache_dir() / 'easy.pt'}")
    rows = {ln.split()[0]: ln for ln in runner.invoke(app, ["fetch", "--list"]).output.splitlines() if ln}
    assert rows["coco8"].endswith(f"found {data_root() / 'coco8'}")


def test_unknown_name_is_one_line(hosts: LoopbackHosts, monkeypatch, capsys) -> None:
    code, _, err = _main(["fetch", "nope"], monkeypatch, capsys)
    assert code == 2 and "unknown name 'nope'" in err and "coco8" in err
    code, _, err = _main(["fetch", "cifar10_test_subset"], monkeypatch, capsys)
    assert code == 2 and "cannot be fetched" in err


def test_first_use_fetches_the_data_set_of_a_recipe_path(hosts: LoopbackHosts, monkeypatch, capsys) -> None:
    from taskbridge.config import ConfigError
    from taskbridge.engine.data import resolve_source

    root = data_root()
    files = resolve_source("hazy_unlabeled_aodnet", root, "train_A")
    assert len(files) == 22 and all(f.is_relative_to(root / "hazy_unlabeled_aodnet") for f in files)
    assert len(hosts.requests) == 22
    assert "fetching data set 'hazy_unlabeled_aodnet' (22 files" in capsys.readouterr().err
    hosts.reset()
    assert len(resolve_source(["hazy_unlabeled_aodnet/*.png"], root, "train_A")) == 4 and hosts.requests == []
    with pytest.raises(ConfigError, match="does not exist"):  # a registered set already here: no fetch, a clear error
        resolve_source("hazy_unlabeled_aodnet/nope", root, "train_A")
    with pytest.raises(ConfigError, match="does not exist"):  # not a registered name: nothing is fetched
        resolve_source("my_own_folder/x", root, "train_A")
    assert hosts.requests == []
    monkeypatch.setenv("TASKBRIDGE_OFFLINE", "1")
    with pytest.raises(datasets.DataNotFoundError, match="taskbridge fetch lowlight_unlabeled_sci"):
        resolve_source("lowlight_unlabeled_sci/medium", root, "train_A")


def test_yolov5n_entry_is_the_official_checkpoint_with_the_converted_file_as_fallback(tmp_path, monkeypatch,
                                                                                       shared_data: Path) -> None:
    spec = hub.weight_spec("yolov5n-coco")
    assert spec.filename == "yolov5n.pt" and spec.url.endswith("/releases/download/v6.0/yolov5n.pt")
    assert spec.sha256 == "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"
    only_converted = tmp_path / "w" / "yolov5n_coco"
    only_converted.mkdir(parents=True)
    (only_converted / "yolov5n_state_dict.pt").symlink_to(shared_data / "yolov5n_coco" / "yolov5n_state_dict.pt")
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TASKBRIDGE_OFFLINE", "1")
    assert hub.resolve("yolov5n-coco").name == "yolov5n_state_dict.pt"


@pytest.mark.slow
def test_fit_smoke_recipe_from_a_bare_checkout_fetches_its_data(server: LoopbackHosts, tmp_path: Path) -> None:
    """No TASKBRIDGE_WEIGHTS/TASKBRIDGE_DATA, no ../shared/data: `fit` fetches both data sets through the mirror."""
    server.reset()
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKBRIDGE_")}
    env.update(TASKBRIDGE_CACHE=str(tmp_path / "cache"), TASKBRIDGE_MIRROR=server.base_url, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "taskbridge", "fit", str(REPO / "recipes" / "smoke.yaml"),
                           "-o", str(tmp_path / "run")], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    asked = server.paths()
    for name in ("lowlight_unlabeled_sci", "coco8"):
        spec = datasets.data_set(name)
        assert {url_key(f.url) for f in spec.files} <= set(asked), name
        assert (tmp_path / "cache" / "data" / name).is_dir()
        assert f"fetching data set '{name}'" in proc.stderr
    print(f"end-to-end fit with fetch: {took:.1f} s, {len(asked)} requests")
