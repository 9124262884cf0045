"""Speed, memory, parameters and FLOPs of every registered translator and method (`taskbridge bench`).

One row per (network, size), so scale questions ("what does 512 px cost?", "does it fit?") have one
place to look, on CPU and CUDA alike:

* translators, built from the registry with their defaults: parameters, inference images/s
  (`torch.inference_mode`), GFLOPs per image, peak memory;
* methods, built from their representative recipe (`recipes/<name>.yaml`, frozen task models and
  restorers from the weights hub) on a synthetic unpaired batch {"A", "B", "A_paths", "B_paths"} (what
  `unpaired_collate` makes for every data source): trainable parameters, training steps/s, FLOPs of
  one step and peak memory. A step is what the trainer does: `training_step` under autocast, then for
  each optimizer group in order zero all gradients, back-propagate `loss/<group>`, clip if the recipe
  says so, step that group's optimizer (built by `engine.optim`, recipe over `default_optim()`).

Each row first makes one call under `torch.utils.flop_counter.FlopCounterMode` (which also does
lazy initialisation: optimizer state, kernel selection), then `warmup` untimed calls, then `iters`
timed calls, each waited for (CUDA synchronised); the throughputs use the median call, so one call
slowed by another job on a shared machine does not move them. FLOPs are `FlopCounterMode`'s: 2 per
multiply-add of the matrix products and convolutions (forward and backward) it knows, with the weight
gradient of grouped convolutions corrected; element-wise ops, norms and optimizer updates count 0.
Peak memory is `torch.cuda.max_memory_allocated` on CUDA; on CPU the process's peak resident set size
(Linux `VmHWM`, reset through `/proc/self/clear_refs` before each row, freed heap handed back with
`malloc_trim` first) minus the resident size before the network was built. Both include the weights,
the optimizer state and the activations. A size a network cannot take (its `min_size`,
`size_multiple` or fixed `out_size`), a network that cannot be built with defaults, missing weights
and running out of memory give a row with `skipped` set, never an exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import torch
from torch import nn

from taskbridge.engine.optim import step_groups

#: the recipe(s) that stand for each registered method (in `recipes/`); others are benched from `<name>.yaml`
REPRESENTATIVE_RECIPES: dict[str, tuple[str, ...]] = {
    "cyclegan": ("cyclegan.yaml",),
    "cut": ("cut.yaml",),
    "fastcut": ("fastcut.yaml",),
    "odcr": ("odcr.yaml",),
    "hierarchy-flow": ("hierarchy-flow.yaml",),
    "vat": ("dehaze-det-vat.yaml", "lowlight-cls-vat.yaml"),
    "gfpgan": ("gfpgan.yaml",),
}
#: images a VaT recipe's `nuq_fit` sees in the bench: the NUQ is fitted once before timing (setup, not
#: measured); fewer images keep the setup short and barely change the per-step query cost
NUQ_FIT_IMAGES = 64


@dataclass
class Settings:
    """How to measure: sizes (square sides), batch, timed and untimed iterations, device and autocast."""

    sizes: Sequence[int] = (256, 512)
    batch: int = 1
    iters: int = 5
    warmup: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False  # bf16 autocast; CUDA only

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class Row:
    """One measured (or skipped) network at one size; `to_dict` is what the JSON holds."""

    kind: str  # translator | method
    name: str  # registry name
    size: int | None  # None: skipped before any size (cannot be built)
    batch: int
    recipe: str | None = None  # methods: the recipe it was built from
    params: int | None = None  # all parameters (translator: all; method: all, frozen ones included)
    trainable: int | None = None  # methods: parameters in the optimizer groups
    flops: int | None = None  # translator: per image, inference; method: one training step of the batch
    images_per_s: float | None = None
    steps_per_s: float | None = None
    seconds_per_iter: float | None = None  # the median timed call; throughputs are batch (or 1) / this
    seconds: list[float] | None = None  # every timed call
    peak_mb: float | None = None
    skipped: str | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        stem = Path(self.recipe).stem if self.recipe else None
        return f"{self.name} ({stem})" if stem and stem != self.name else self.name

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gflops"] = None if self.flops is None else self.flops / 1e9
        out["flops_of"] = "inference, per image" if self.kind == "translator" else f"training step, batch {self.batch}"
        return out


# ----------------------------------------------------------------------------------------------- environment


def environment(device: torch.device, amp: bool) -> dict[str, Any]:
    """What the numbers depend on: versions, the device's name, threads, and how memory was measured."""
    cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "cuda": torch.version.cuda if cuda else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "amp": "bf16 autocast" if amp and cuda else None,
        "memory": MEMORY_CUDA if cuda else (MEMORY_CPU if _can_reset_rss() else MEMORY_CPU_FALLBACK),
        "flops": "torch.utils.flop_counter.FlopCounterMode: 2 per multiply-add of matmuls/convolutions (fwd and bwd)",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------- memory

MEMORY_CUDA = "torch.cuda.max_memory_allocated over the row, minus what was allocated before the network was built"
MEMORY_CPU = ("peak resident set size over the row (Linux VmHWM, reset via /proc/self/clear_refs after malloc_trim), "
              "minus the resident size before the network was built")
MEMORY_CPU_FALLBACK = ("resource.getrusage ru_maxrss (the process's high-water mark, never reset) minus the resident "
                       "size before the network was built: rows after a bigger one under-report")


def _proc_status_mb(key: str) -> float | None:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1)) / 1024
    return None


def _can_reset_rss() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and _proc_status_mb("VmHWM") is not None


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS, so one row's leftovers are not the next one's free memory."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a row in MB, with the same meaning on CPU and CUDA (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.base = 0.0

    def current_mb(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / 2**20
        rss = _proc_status_mb("VmRSS")
        return rss if rss is not None else self._maxrss_mb()

    @staticmethod
    def _maxrss_mb() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux

    def baseline(self) -> None:
        """Before the network is built."""
        self.free()
        self.base = self.current_mb()

    def free(self) -> None:
        _trim_heap()
        if self.cuda:
            torch.cuda.empty_cache()

    def reset(self) -> None:
        """Before a row's work: from here on the peak is this row's."""
        self.free()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _can_reset_rss():
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def peak_mb(self) -> float:
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = _proc_status_mb("VmHWM") if _can_reset_rss() else None
            peak = hwm if hwm is not None else self._maxrss_mb()
        return max(0.0, peak - self.base)


# ----------------------------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a CUDA timing measures the kernels and not their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _conv_backward_flop(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int], _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                        groups: int, output_mask: Sequence[bool], out_shape: Sequence[Any] | None = None,
                        **_: Any) -> int:
    """torch's `conv_backward_flop` with the weight gradient divided by `groups`.

    torch (2.14 included) counts the weight gradient of a grouped convolution as if it were dense:
    a depthwise 3x3 conv's backward comes out ~channels times its forward (VaT's Restormer blocks: 12x
    its forward FLOPs instead of 2x). The input gradient and the forward already take groups into account."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape: Sequence[int]) -> list[int]:
        return [shape[1], shape[0], *shape[2:]]

    assert out_shape is not None
    flops = 0
    if output_mask[0]:  # grad_input: the transposed convolution of grad_out with the weight
        flops += conv_flop_count(list(grad_out_shape), list(w_shape), list(out_shape[0]), not transposed)
    if output_mask[1]:  # grad_weight: a convolution of the input with grad_out, one per group
        grad_w = list(out_shape[1])
        pair = (t(grad_out_shape), t(x_shape)) if transposed else (t(x_shape), t(grad_out_shape))
        flops += conv_flop_count(*pair, t(grad_w), transposed=False) // max(1, int(groups))
    return flops


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, as `FlopCounterMode` counts them (grouped-conv backward corrected), no table printed."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        fn()
    return int(counter.get_total_flops())


def first_call(fn: Callable[[], Any]) -> tuple[int | None, str | None]:
    """The row's first call, FLOPs counted: (flops, None), or (None, why) when the counter itself fails
    (its module tracker trips on some graphs); then the call is made again without it."""
    try:
        return count_flops(fn), None
    except Exception as err:  # noqa: BLE001 - only the count is lost; the network's own errors recur below
        if is_out_of_memory(err):
            raise
        fn()
        return None, f"FLOPs not counted ({reason(err)})"


def time_calls(fn: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of `iters` calls (each waited for) after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def size_problem(net: nn.Module, size: int) -> str | None:
    """Why `net` cannot take size x size images (its fixed `out_size`/`face_size`, `min_size`, `size_multiple`)."""
    for attr in ("out_size", "face_size"):
        fixed = getattr(net, attr, None)
        if isinstance(fixed, int) and fixed != size:
            return f"takes only {fixed} px ({attr} {fixed})"
    low = int(getattr(net, "min_size", 1) or 1)
    if size < low:
        return f"smaller than its min_size {low}"
    multiple = int(getattr(net, "size_multiple", 1) or 1)
    if size % multiple:
        return f"not a multiple of its size_multiple {multiple}"
    return None


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def reason(err: BaseException) -> str:
    """One line for a skipped row."""
    if is_out_of_memory(err):
        return "out of memory"
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _count(params: Any) -> int:
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = p.numel()
    return sum(seen.values())


# ----------------------------------------------------------------------------------------------- translators


def translator_call(net: nn.Module, size: int, batch: int, device: torch.device) -> Callable[[], Any]:
    """The network's inference path on a random batch in its value range and channel count.

    Style-conditioned translators (`style_code` + `translate`, Hierarchy Flow) encode a reference
    image of the same size per call, as inference with a reference does."""
    from taskbridge.translators.base import value_range

    lo, hi = value_range(net)
    channels = int(getattr(net, "in_channels", 3) or 3)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, channels, size, size, generator=gen) * (hi - lo) + lo).to(device)
    if callable(getattr(net, "style_code", None)) and callable(getattr(net, "translate", None)):
        ref = (torch.rand(batch, channels, size, size, generator=gen) * (hi - lo) + lo).to(device)
        return lambda: net.translate(x, net.style_code(ref))
    return lambda: net(x)


def bench_translator(name: str, settings: Settings) -> Iterator[Row]:
    """One row per size for the registered translator `name`, built with its defaults."""
    from taskbridge.registry import TRANSLATORS

    mem = PeakMemory(settings.device)
    mem.baseline()
    try:
        torch.manual_seed(0)
        # inference only: frozen, so no-grad views of parameters do not trip FlopCounterMode's module tracker
        net = TRANSLATORS.create(name).to(settings.device).eval().requires_grad_(False)
    except Exception as err:  # noqa: BLE001 - a survey: one network that cannot be built is a row, not a crash
        yield Row("translator", name, None, settings.batch, skipped=f"cannot be built with defaults: {reason(err)}")
        return
    params = _count(net.parameters())
    try:
        for size in settings.sizes:
            row = Row("translator", name, size, settings.batch, params=params)
            problem = size_problem(net, size)
            if problem:
                row.skipped = problem
                yield row
                continue
            try:
                mem.reset()
                fn = translator_call(net, size, settings.batch, settings.device)

                def infer(fn: Callable[[], Any] = fn) -> None:
                    with torch.inference_mode(), settings.autocast():
                        fn()

                flops, row.note = first_call(infer)  # also the lazy-init call
                row.flops = None if flops is None else flops // settings.batch
                row.seconds = time_calls(infer, settings.iters, settings.warmup, settings.device)
                row.seconds_per_iter = seconds = median(row.seconds)  # one slowed call does not move it
                row.images_per_s = settings.batch / seconds
                row.peak_mb = mem.peak_mb()
            except Exception as err:  # noqa: BLE001 - out of memory or a size the network refuses: a skipped row
                row.flops = None
                row.skipped = reason(err)
            finally:
                fn = None  # type: ignore[assignment]  # its input batch
                mem.free()
            yield row
    finally:
        del net
        mem.free()


# ----------------------------------------------------------------------------------------------- methods


def default_recipes_dir() -> Path:
    """`recipes/` of the working directory, else the repository's (editable installs)."""
    here = Path("recipes")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "recipes"


def method_recipes(name: str, recipes_dir: Path) -> list[Path]:
    """The representative recipe(s) of method `name` (missing files are left for `bench_method` to report)."""
    return [recipes_dir / r for r in REPRESENTATIVE_RECIPES.get(name, (f"{name}.yaml",))]


def load_method_recipe(path: Path) -> dict[str, Any]:
    """The recipe validated without its data section (the bench feeds synthetic batches)."""
    from taskbridge.config import load_recipe, to_dict
    from taskbridge.run_config import RunConfig

    doc = to_dict(load_recipe(path))  # interpolations into data (VaT's nuq_fit.fractions) resolved first
    doc.pop("data", None)
    return RunConfig.from_dict(doc, str(path)).to_dict()


def synthetic_batch(size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """An unpaired training batch as `unpaired_collate` makes it, of uniform noise in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    return {
        "A": torch.rand(batch, 3, size, size, generator=gen).to(device),
        "B": torch.rand(batch, 3, size, size, generator=gen).to(device),
        "A_paths": [f"synthetic/A/{i}.png" for i in range(batch)],
        "B_paths": [f"synthetic/B/{i}.png" for i in range(batch)],
    }


class TrainStep:
    """The trainer's step without logging, NaN handling, schedulers or callbacks: forward under
    autocast, then `engine.optim.step_groups` (each group's backward and step, as the trainer)."""

    def __init__(self, method: nn.Module, recipe: Mapping[str, Any], settings: Settings) -> None:
        from taskbridge.engine.optim import build_optimizer, merge_group_spec

        self.method, self.settings = method, settings
        self.groups = {g: list(p) for g, p in method.optim_groups().items()}
        defaults = method.default_optim()
        optim = recipe.get("optim") or {}
        subsets = method.param_subsets()
        self.optimizers = {}
        for g, params in self.groups.items():
            override = {k: v for k, v in dict(optim.get(g) or {}).items() if v is not None and k != "schedule"}
            self.optimizers[g] = build_optimizer(params, merge_group_spec(defaults.get(g), override), where=f"optim.{g}",
                                                 subsets=subsets.get(g))
        self.grad_clip = (recipe.get("train") or {}).get("grad_clip")
        self.scaler = torch.amp.GradScaler(enabled=False)  # bf16 autocast (--amp) needs no loss scaling
        self.step = 1  # from 1: step-0 extras (e.g. lazy R1 every 16 steps) are not over-represented
        self.non_finite = False

    def __call__(self, batch: dict[str, Any]) -> None:
        with self.settings.autocast():
            out = self.method.training_step(batch, self.step)
        missing = [g for g in self.groups if f"loss/{g}" not in out]
        if missing:
            raise KeyError(f"training_step returned no loss/{', loss/'.join(missing)}")
        losses = [out[f"loss/{g}"] for g in self.groups]
        if not bool(torch.isfinite(torch.stack([v.detach().float() for v in losses])).all()):  # as the trainer
            self.non_finite = True
        step_groups(self.groups, self.optimizers, out, self.scaler, self.grad_clip)
        self.step += 1


def _cap_nuq_fit(recipe: dict[str, Any]) -> None:
    fit = (recipe.get("method") or {}).get("nuq_fit")
    if isinstance(fit, dict):
        fit["max_images"] = min(int(fit.get("max_images") or NUQ_FIT_IMAGES), NUQ_FIT_IMAGES)
        fit["save"] = None  # never write a file from a benchmark


def bench_method(name: str, recipe_path: Path, settings: Settings) -> Iterator[Row]:
    """One row per size for method `name` built from `recipe_path`, trained on synthetic batches."""
    from taskbridge.inference.load import build_method

    mem = PeakMemory(settings.device)
    mem.baseline()
    where = str(recipe_path)
    setup_note = None
    try:
        if not recipe_path.is_file():
            raise FileNotFoundError(f"no representative recipe {recipe_path}")
        recipe = load_method_recipe(recipe_path)
        _cap_nuq_fit(recipe)
        torch.manual_seed(0)
        method = build_method(recipe).to(settings.device)
        method.train()
        fit_nuq = getattr(method, "fit_nuq", None)
        if callable(fit_nuq) and getattr(method, "use_mle", False):  # once, before timing (the trainer: at step 0)
            t0 = time.perf_counter()
            if fit_nuq() is not None:
                setup_note = f"NUQ fitted on <= {NUQ_FIT_IMAGES} images in {time.perf_counter() - t0:.1f} s (not timed)"
    except Exception as err:  # noqa: BLE001 - a survey: a method that cannot be built is a row, not a crash
        yield Row("method", name, None, settings.batch, recipe=where, skipped=f"cannot be built: {reason(err)}")
        return
    params = _count(method.parameters())
    trainable = _count(p for ps in method.optim_groups().values() for p in ps if p.requires_grad)
    try:
        for size in settings.sizes:
            row = Row("method", name, size, settings.batch, recipe=where, params=params, trainable=trainable,
                      note=setup_note)
            problem = size_problem(method, size)
            if problem:
                row.skipped = problem
                yield row
                continue
            step: TrainStep | None = None
            try:
                mem.reset()
                batch = synthetic_batch(size, settings.batch, settings.device)
                step = TrainStep(method, recipe, settings)  # fresh optimizers: their state is in this row's peak

                def one(step: TrainStep = step, batch: dict[str, Any] = batch) -> None:
                    step(batch)

                row.flops, flop_note = first_call(one)  # also the lazy-init step
                row.note = "; ".join(filter(None, [row.note, flop_note])) or None
                row.seconds = time_calls(one, settings.iters, settings.warmup, settings.device)
                row.seconds_per_iter = seconds = median(row.seconds)  # one slowed call does not move it
                row.steps_per_s = 1.0 / seconds
                row.images_per_s = settings.batch / seconds
                row.peak_mb = mem.peak_mb()
                if step.non_finite:
                    row.note = "; ".join(filter(None, [row.note, "non-finite loss on the synthetic batch"]))
            except Exception as err:  # noqa: BLE001 - out of memory or a size the method refuses: a skipped row
                row.flops = None
                row.skipped = reason(err)
            finally:
                step = batch = None  # type: ignore[assignment]
                method.zero_grad(set_to_none=True)
                mem.free()
            yield row
    finally:
        del method
        mem.free()


# ----------------------------------------------------------------------------------------------- all together


def plan(translators: Sequence[str], methods: Sequence[tuple[str, Path]], settings: Settings
         ) -> Iterator[tuple[int, Callable[[], Iterator[Row]]]]:
    """(rows it will yield, row generator) per network, translators first: what a progress bar counts."""
    n = len(settings.sizes)
    for name in translators:
        yield n, lambda name=name: bench_translator(name, settings)
    for name, recipe in methods:
        yield n, lambda name=name, recipe=recipe: bench_method(name, recipe, settings)


def report(rows: Sequence[Row], env: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The JSON document: environment, settings, rows."""
    return {
        "environment": dict(env),
        "settings": {"sizes": list(settings.sizes), "batch": settings.batch, "iters": settings.iters,
                     "warmup": settings.warmup, "device": str(settings.device), "amp": settings.amp,
                     "nuq_fit_images": NUQ_FIT_IMAGES},
        "rows": [r.to_dict() for r in rows],
    }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: one line per row, skipped rows with their reason."""
    head = (f"{'kind':<10} {'name':<34} {'size':>5} {'params M':>9} {'train M':>8} {'GFLOPs':>9} "
            f"{'img/s':>8} {'steps/s':>8} {'peak MB':>8}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        note = r.skipped and f"skipped: {r.skipped}" or r.note or ""
        lines.append(
            f"{r.kind:<10} {r.label:<34} {_num(r.size, 'd'):>5} {_num(r.params and r.params / 1e6, '.3f'):>9} "
            f"{_num(r.trainable and r.trainable / 1e6, '.3f'):>8} {_num(r.flops and r.flops / 1e9, '.2f'):>9} "
            f"{_num(r.images_per_s if r.kind == 'translator' else None, '.3g'):>8} {_num(r.steps_per_s, '.3g'):>8} "
            f"{_num(r.peak_mb, '.0f'):>8}  {note}".rstrip())
    return "\n".join(lines)
