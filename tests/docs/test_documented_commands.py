"""Every `taskbridge` command the README, docs/*.md and recipe headers show is checked, most of them run.

Commands come from ```bash blocks of README.md and docs/*.md and from `#   taskbridge ...` lines at
the top of recipes (`\\` continues a line, `#` starts a comment). Each one is parsed by the real CLI
(options and their types), its repository paths must exist (`recipes/...`, `FILE.json:PART`), and:
`fit` builds its trainer (recipe, overrides, data and validation resolved; no step is taken), every
other command runs for real in a scratch folder, on small samples of its input folders, with
`evaluate --limit 2` and a one-step run standing in for a trained run. CUDA-only commands are
parsed, not run. Placeholders: RECIPE, DIR, DIR_A, DIR_B, RUN, S; `recipes/X.yaml`; `runs/<name>`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from taskbridge.cli import app

REPO = Path(__file__).resolve().parents[2]
SAMPLE_FROM = "faces_fairface/images"  # the photos standing in for an input folder (448 px: real, and quick)


def _blocks(text: str) -> Iterator[str]:
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        yield m.group(1)


def _commands_of(text: str) -> list[str]:
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if current:
            current += " " + line.strip().rstrip("\\").strip()
        elif line.strip().startswith("taskbridge "):
            current = line.strip().rstrip("\\").strip()
        else:
            continue
        if not line.endswith("\\"):
            out.append(current)
            current = ""
    return out


def documented() -> list[tuple[str, str]]:
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in _blocks(doc.read_text()):
            found += [(doc.name, c) for c in _commands_of(block)]
    for recipe in sorted((REPO / "recipes").rglob("*.yaml")):
        header = "\n".join(ln.lstrip("#") for ln in recipe.read_text().splitlines() if ln.startswith("#"))
        found += [(str(recipe.relative_to(REPO)), c) for c in _commands_of(header)]
    return found


COMMANDS = documented()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A scratch working directory where `recipes/` and `../shared/data` resolve as in the repository."""
    root = tmp_path_factory.mktemp("docs")
    ws = root / "ws"
    ws.mkdir()
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(shared_data)
    for name in ("recipes", "scripts"):
        (ws / name).symlink_to(REPO / name)
    sample = ws / "_sample"
    sample.mkdir()
    for f in sorted((shared_data / SAMPLE_FROM).iterdir())[:2]:
        (sample / f.name).symlink_to(f)
    return ws


@pytest.fixture(scope="module")
def trained_run(workspace: Path) -> Path:
    """One step of the main recipe at a tiny size: stands in for `runs/dehaze-det-vat` and every RUN."""
    from taskbridge.engine.trainer import Trainer

    over = ["train.steps=1", "data.resize=[32,32]", "data.size=32", "data.batch_size=2", "method.use_mle=false",
            "method.nuq_fit=null", "val.type=none", "train.progress=false", "train.tensorboard=false",
            "train.image_every=0", "train.device=cpu", "inference.working_size=32"]
    run = workspace / "_run"
    import os

    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        Trainer.from_recipe("recipes/dehaze-det-vat.yaml", over, output_dir=run).fit()
    finally:
        os.chdir(cwd)
    return run


def _substitute(args: list[str], ws: Path, run: Path, out: Path) -> list[str]:
    """Placeholders and input folders -> the scratch workspace; outputs -> this test's own folder."""
    sample = str(ws / "_sample")
    subs = []
    for i, a in enumerate(args):
        before = args[i - 1] if i else ""
        if a == "...":
            continue
        if before in ("--in", "--pred", "--ref") or a in ("DIR", "DIR_A", "DIR_B"):
            a = sample
        elif before in ("--out", "-o"):
            a = str(out / Path(a).name)
        elif a in ("RECIPE", "recipes/X.yaml"):
            a = "recipes/smoke.yaml"
        elif a in ("RUN", "runs/X") or (before in ("--ckpt", "--translator") and a.startswith("runs/")):
            a = str(run)
        a = re.sub(r"=DIR(_A|_B)?$", f"={sample}", a).replace("seed=S", "seed=0")
        subs.append(a)
    return subs


def _check_paths(args: list[str]) -> None:
    for a in args:
        value = a.split("=", 1)[-1]
        if value.startswith(("recipes/", "scripts/")):
            file, _, part = value.partition(":")
            assert (REPO / file).exists(), f"{file} does not exist"
            if part:
                from taskbridge.data.splits import load_split

                assert part in load_split(REPO / file), f"{file} has no part '{part}'"


def _first_of_their_kind(commands: list[tuple[str, str]]) -> list[bool]:
    """Whether each command is the first one that runs as it does here: two documented commands that differ only in
    what the placeholders and the output folder replace (e.g. a recipe header repeating the README's evaluate) run
    the same code on the same sample, so the second is parsed and its paths checked, not run again."""
    seen: set[tuple[str, ...]] = set()
    first = []
    for _, command in commands:
        key = tuple(_substitute(shlex.split(command)[1:], Path("WS"), Path("RUN"), Path("OUT")))
        first.append(key not in seen)
        seen.add(key)
    return first


CASES = [(w, c, first) for (w, c), first in zip(COMMANDS, _first_of_their_kind(COMMANDS), strict=True)]


@pytest.mark.parametrize(("where", "command", "first"), CASES, ids=[f"{w}:{c[:60]}" for w, c, _ in CASES])
def test_documented_command(where: str, command: str, first: bool, workspace: Path, trained_run: Path, monkeypatch,
                            tmp_path: Path) -> None:
    args = _substitute(shlex.split(command)[1:], workspace, trained_run, tmp_path)
    _check_paths(args)
    click_app = typer.main.get_command(app)
    sub = click_app.get_command(None, args[0])  # type: ignore[arg-type]
    assert sub is not None, f"{where}: unknown command {args[0]}"
    sub.make_context(args[0], list(args[1:]))  # options and their types, as the CLI parses them
    if not first:
        return  # an earlier documented command runs exactly this (see _first_of_their_kind)
    monkeypatch.chdir(workspace)
    if args[0] == "fit":
        from taskbridge.engine.trainer import Trainer

        overrides = [a for a in args[2:] if "=" in a and not a.startswith("-")]
        from taskbridge.config import load_recipe

        data = load_recipe(args[1]).get("data", {})
        if str(data.get("root") or "").startswith("runs/"):
            # data made by an earlier documented command (e.g. align-faces): the sample stands in for it
            overrides.append(f"data.root={workspace / '_sample'}")
        if any(str(workspace / "_sample") in a for a in overrides) and int(data.get("batch_size") or 1) > 2:
            overrides.append("data.batch_size=2")  # the sample has two photos
        Trainer.from_recipe(args[1], overrides, output_dir=tmp_path / "fit", device="cpu")  # built, not trained
        return
    if "cuda" in args:
        return  # parsed only: no GPU where the tests run
    if args[0] == "evaluate":
        args += ["--grid", "0", "--out", str(tmp_path / "eval")] + ([] if "--limit" in args else ["--limit", "2"])
    res = CliRunner().invoke(app, args)
    from taskbridge.hub import WeightsNotFoundError

    missing = re.match(r"weights '([\w.-]+)' ", str(res.exception or ""))
    if isinstance(res.exception, WeightsNotFoundError) and missing and _user_download(missing.group(1)):
        pytest.skip(f"needs the user-downloaded weights '{missing.group(1)}' (refused in one line, as it should be)")
    assert res.exit_code == 0, f"{where}: {' '.join(args)}\n{res.output}\n{res.exception!r}"


def _user_download(name: str) -> bool:
    """Weights that only a user can fetch (declared with a URL, absent from ../shared/data)."""
    from taskbridge import hub

    try:
        hub.resolve(name, download=False)
        return False
    except hub.WeightsNotFoundError:
        return hub.weight_spec(name).url is not None
