"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

Layout of one checkpoint directory (`<output_dir>/checkpoints/step_0000500/`):

* `model.safetensors` - the method's state dict **without frozen submodules** (restorer, task
  model: those come back from the weights hub when the method is rebuilt from the config);
* `state.safetensors` - tensors of optimizer, scheduler, AMP scaler and RNG states;
* `meta.json` - step, epoch, recipe config, data position, metrics, and the JSON parts of those
  states with `{"__tensor__": key}` placeholders pointing into `state.safetensors`.

A checkpoint is written into a temporary sibling directory and renamed into place, so a crash
never leaves a half-written checkpoint under a valid name. `checkpoints/LAST` names the newest
one; `checkpoints/best/` is the one chosen on the validation split (its `meta.json` says by which
split, metric and mode). Nothing is unpickled on load.

This module knows the file format only; the engine writes checkpoints while training and
`taskbridge.inference` rebuilds a trained run from one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from taskbridge.data.io import UMASK, atomic_write_text, publish

FORMAT_VERSION = 1
LAST_POINTER = "LAST"
BEST_DIR = "best"
LAST_GOOD_DIR = "last-good"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the method; the message names the path."""


# --------------------------------------------------------------------------- tensor <-> JSON split


def split_tensors(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace every tensor in a nested structure by a placeholder and collect it in `tensors`.

    Dicts with non-string keys (optimizer state is keyed by parameter index) and tuples are
    tagged so `join_tensors` gives back exactly the same Python structure.
    """
    if isinstance(obj, Tensor):
        key = prefix
        t = obj.detach().cpu()
        tensors[key] = t.clone().contiguous()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and "__tensor__" not in obj:
            return {k: split_tensors(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    raise CheckpointError(f"cannot store {prefix} of type {type(obj).__name__} in a checkpoint")


def join_tensors(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dtype__"}:
            return getattr(torch, obj["__dtype__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


# --------------------------------------------------------------------------- frozen parts


def frozen_prefixes(method: nn.Module) -> list[str]:
    """State-dict prefixes of frozen submodules, which checkpoints leave out.

    A method may list them itself (`frozen_modules = ("restorer", "task")`), e.g. when it keeps an
    EMA copy whose parameters do not require grad but change. Otherwise: every maximal submodule
    that owns parameters none of which requires grad.
    """
    declared = getattr(method, "frozen_modules", None)
    if declared is not None:
        return [f"{name}." for name in declared]
    return untrained_prefixes(method)


def untrained_prefixes(method: nn.Module) -> list[str]:
    """Every maximal submodule that owns parameters none of which requires grad (`name.`)."""
    out: list[str] = []
    for name, mod in method.named_modules():
        if not name or any(name.startswith(p) for p in out):
            continue
        params = list(mod.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(f"{name}.")
    return out


def trainable_state(method: nn.Module) -> dict[str, Any]:
    """The method's state dict minus frozen submodules."""
    skip = frozen_prefixes(method)
    return {k: v for k, v in method.state_dict().items() if not any(k.startswith(p) for p in skip)}


def load_trainable_state(method: nn.Module, state: Mapping[str, Any], where: str) -> None:
    """Load `trainable_state` output; a key missing outside the frozen parts is an error."""
    result = method.load_state_dict(dict(state), strict=False)
    skip = frozen_prefixes(method)
    missing = [k for k in result.missing_keys if not any(k.startswith(p) for p in skip)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{where}: weights do not match the method built from its config "
            f"(missing: {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected: {result.unexpected_keys[:8]})"
        )


# --------------------------------------------------------------------------- save / load


def save_checkpoint(
    directory: str | os.PathLike[str],
    method: nn.Module,
    state: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing one of the same name).

    `state`: nested optimizer/scheduler/scaler/RNG states (tensors go to `state.safetensors`).
    `meta`: JSON-able run information (step, epoch, config, metrics, ...).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        model_tensors: dict[str, Tensor] = {}
        model_rest = split_tensors(trainable_state(method), "model", model_tensors)
        # safetensors keys are the plain state-dict keys
        save_file({k.removeprefix("model/"): v for k, v in model_tensors.items()}, str(tmp / "model.safetensors"))
        state_tensors: dict[str, Tensor] = {}
        state_json = split_tensors(dict(state or {}), "state", state_tensors)
        save_file(state_tensors, str(tmp / "state.safetensors"))
        doc = {
            "format": FORMAT_VERSION,
            **dict(meta or {}),
            "model_extra": _non_tensor_entries(model_rest),
            "state": state_json,
        }
        (tmp / "meta.json").write_text(json.dumps(doc, indent=1, allow_nan=True))
        for f in tmp.iterdir():  # on disk before the folder is renamed into place
            os.chmod(f, 0o666 & ~UMASK)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{os.getpid()}"
            os.replace(directory, old)
        publish(tmp, directory, folder=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _non_tensor_entries(model_rest: dict[str, Any]) -> dict[str, Any]:
    """State-dict entries that are not tensors (e.g. `get_extra_state` values), kept in JSON."""
    return {k: v for k, v in model_rest.items() if not (isinstance(v, dict) and set(v) == {"__tensor__"})}


def _read_model(directory: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """model.safetensors plus the JSON entries; tensors nested in extra state are put back in place."""
    tensors = _load_tensors(directory / "model.safetensors")
    nested = {f"model/{k}": v for k, v in tensors.items() if any(k.startswith(f"{e}/") for e in extra)}
    model: dict[str, Any] = {k: v for k, v in tensors.items() if f"model/{k}" not in nested}
    model.update(join_tensors(extra, nested))
    return model


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no meta.json)")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); the checkpoint is damaged, use another one") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _load_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file, or a CheckpointError naming it (truncated, empty, not safetensors)."""
    try:
        return dict(load_file(str(path)))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: cannot be read ({type(err).__name__}: {err}); the checkpoint is damaged, "
                              "use another one (e.g. --prefer last)") from None


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """Return (model state, nested training state, meta) of a checkpoint directory."""
    directory = Path(directory)
    if not (directory / "state.safetensors").is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint, state.safetensors is missing (a weights-only "
                              "copy can be applied, not resumed)")
    model, meta = load_model_state(directory)
    state = join_tensors(meta.pop("state", {}), _load_tensors(directory / "state.safetensors"))
    return model, state, meta


def load_model_state(directory: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(model state, meta) of a checkpoint directory: all that applying a run needs, so a weights-only copy
    (meta.json + model.safetensors, without the optimizer and RNG state) loads too."""
    directory = Path(directory)
    meta = read_meta(directory)
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint, model.safetensors is missing")
    return _read_model(directory, meta.pop("model_extra", {}) or {}), meta


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def write_last_pointer(ckpt_root: Path, name: str) -> None:
    atomic_write_text(ckpt_root / LAST_POINTER, name + "\n")


def resolve_checkpoint(path: str | os.PathLike[str], prefer: str = "last") -> Path:
    """A checkpoint directory from: itself, a `checkpoints/` folder, or a run's output dir.

    For folders, `prefer` picks `best` (validation-selected) or `last`, falling back to the other.
    """
    p = Path(path)
    if (p / "meta.json").is_file():
        return p
    if p.is_file() and p.name in ("meta.json", "model.safetensors"):
        return p.parent
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    order = [BEST_DIR, LAST_POINTER] if prefer == "best" else [LAST_POINTER, BEST_DIR]
    for kind in order:
        if kind == BEST_DIR and (root / BEST_DIR / "meta.json").is_file():
            return root / BEST_DIR
        if kind == LAST_POINTER and (root / LAST_POINTER).is_file():
            cand = root / (root / LAST_POINTER).read_text().strip()
            if (cand / "meta.json").is_file():
                return cand
    raise CheckpointError(
        f"{path}: no checkpoint found (expected a folder with meta.json, or checkpoints/{LAST_POINTER} / "
        f"checkpoints/{BEST_DIR})"
    )


def prune_checkpoints(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step_* directories (best/last-good are separate)."""
    if keep_last <= 0:
        return
    steps = sorted(d for d in ckpt_root.glob("step_*") if d.is_dir())
    for d in steps[:-keep_last]:
        shutil.rmtree(d, ignore_errors=True)
