"""Loss and validation curves as PNG bytes (matplotlib, Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from taskbridge.report.collect import value

#: logged keys that are bookkeeping, not curves
SKIP_KEYS = ("step", "kind", "epoch")
#: validation keys that are counts, not scores
HIDDEN_VAL = ("val/num_", "val/seconds")
SMOOTH_FROM = 20  # points; longer series get an EMA line over the faint raw one


def group_of(key: str) -> str:
    """`loss/G` -> `loss`, `G/idt_A` -> `G`, `gate/mean` -> `gate`; keys without a slash -> `other`."""
    return key.split("/", 1)[0] if "/" in key else "other"


def series(rows: Iterable[dict[str, Any]], skip: Sequence[str] = ()) -> dict[str, tuple[list[int], list[float]]]:
    """key -> (steps, values) over the rows, in step order; non-finite values kept as NaN (gaps)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in sorted(rows, key=lambda r: r["step"]):
        for k, v in row.items():
            if k in SKIP_KEYS or k.startswith(tuple(skip)):
                continue
            steps, values = out.setdefault(k, ([], []))
            steps.append(int(row["step"]))
            values.append(value(v))
    return out


def grouped(curves: dict[str, tuple[list[int], list[float]]]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The loss/* group first (one line per optimizer group), then the others in order of appearance."""
    groups: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for k in sorted(curves, key=lambda k: group_of(k) != "loss"):
        groups.setdefault(group_of(k), {})[k] = curves[k]
    return groups


def ema(values: Sequence[float], span: int) -> list[float]:
    alpha, out, acc = 2.0 / (span + 1), [], math.nan
    for v in values:
        if math.isfinite(v):
            acc = v if not math.isfinite(acc) else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def plot(curves: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str = "",
         markers: bool = False, size: tuple[float, float] = (5.6, 3.2)) -> bytes:
    """One axes, one line per key; long noisy series are drawn faint with an EMA over them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i}" for i in range(10)]
    finite_all: list[float] = []
    for i, (key, (steps, values)) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        finite = [v for v in values if math.isfinite(v)]
        finite_all += finite
        if len(steps) >= SMOOTH_FROM:
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(steps, ema(values, max(5, len(steps) // 20)), color=colour, linewidth=1.6, label=key)
        else:
            ax.plot(steps, values, color=colour, linewidth=1.4, label=key,
                    marker="o" if markers or len(steps) <= 12 else None, markersize=3.5)
    positive = [v for v in finite_all if v > 0]
    if positive and len(positive) == len(finite_all) and max(positive) / min(positive) > 1e3:
        ax.set_yscale("log")  # losses that span decades are unreadable on a linear axis
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no 2.5
    if ax.get_yscale() == "linear":  # 0.98905 as itself, not "+9.89e-1" plus small deltas
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best", ncol=2 if len(curves) > 4 else 1, framealpha=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def train_figures(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(group name, PNG) for every group of training scalars (`loss`, then method groups, lr, ...)."""
    return [(name, plot(curves, f"train: {name}/*" if name != "other" else "train"))
            for name, curves in grouped(series(rows)).items()]


def val_figures(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """One PNG per validation metric (their scales differ: top1 in [0, 1], counts, mAP, ...)."""
    return [(key, plot({key: curve}, f"validation: {key.removeprefix('val/')}", markers=True, size=(4.8, 3.0)))
            for key, curve in series(rows, skip=HIDDEN_VAL).items()]
