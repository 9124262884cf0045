"""Is a recipe better than its control, given how much one recipe's result varies with the seed?

`scripts/vat_experiments.py` scores every (recipe, seed) run on the test split; with a run-to-run spread
of about +-0.01 mAP50 (docs/results.md §3.1), three seeds per row cannot tell a 1-point lever from chance.
This reads those scores back (RUN/test/results.json, no model is run) and prints, per recipe:

* mean +- sd over its seeds;
* the difference to the control recipe **paired by seed** (the control of seed S is the network the
  recipe starts from under seed S), with a 95 % t-interval, and the unpaired (Welch) difference;
* for the recipes that share seeds, how much of the spread is the seed and how much the recipe
  (two-way decomposition of the complete recipes x seeds block, with F tests).

    python scripts/vat_seed_effects.py --control dehaze-det-vat-learn-step0 dehaze-det-vat-learn
    python scripts/vat_seed_effects.py --control dehaze-det-vat-learn-step0 --seeds 0,1,2 \\
        dehaze-det-vat-learn dehaze-det-vat-learn-nocycle dehaze-det-vat-learn-tonly dehaze-det-vat-learn-aug
    python scripts/vat_seed_effects.py --root runs/gpu --control dehaze-det-vat-learn-step0 dehaze-det-vat-learn

Runs are the folders ROOT/<recipe>-s<seed> with a scored test/results.json; the metric is the results'
`map50` (detection) or `top1` (classification) unless --metric says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

from scipy import stats

Scores = dict[int, float]  # seed -> score


def read_scores(root: Path, recipe: str, metric: str | None) -> Scores:
    """Seed -> test score of every scored run ROOT/<recipe>-s<seed>."""
    out: Scores = {}
    pattern = re.compile(rf"{re.escape(recipe)}-s(\d+)")
    for run in sorted(root.glob(f"{recipe}-s*")):
        match = pattern.fullmatch(run.name)
        result = run / "test" / "results.json"
        if not match or not result.is_file():
            continue
        try:
            scored = json.loads(result.read_text())["runs"]["translator"]
        except (ValueError, KeyError) as err:
            raise SystemExit(f"{result}: not a taskbridge evaluate result ({type(err).__name__}: {err})") from None
        key = metric or next((k for k in ("map50", "top1") if k in scored), None)
        if key is None or key not in scored:
            raise SystemExit(f"{result}: no metric {metric or 'map50/top1'} (has {sorted(scored)})")
        out[int(match.group(1))] = float(scored[key])
    return out


def interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t-interval of a mean (nan half-width below two values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    t = stats.t.ppf(0.5 + level / 2, len(values) - 1)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def paired_difference(scores: Scores, control: Scores) -> tuple[int, float, float]:
    """(seeds in both, mean difference, 95 % half-width) of scores - control over the seeds both have."""
    seeds = sorted(set(scores) & set(control))
    if not seeds:
        return 0, math.nan, math.nan
    return (len(seeds), *interval([scores[s] - control[s] for s in seeds]))


def welch_difference(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean difference a - b and the half-width of its Welch t-interval (unequal variances)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(va + vb)


def two_way(table: dict[str, Scores]) -> dict[str, tuple[float, float]]:
    """Share of the total sum of squares and F-test p-value for `recipe` and `seed` (and the residual's
    share) over the complete block: the seeds every recipe has. Needs at least two of each."""
    seeds = sorted(set.intersection(*(set(v) for v in table.values())))
    rows = list(table)
    if len(seeds) < 2 or len(rows) < 2:
        raise ValueError(f"two_way: needs >= 2 recipes sharing >= 2 seeds (got {len(rows)} recipes, seeds {seeds})")
    x = [[table[r][s] for s in seeds] for r in rows]
    grand = statistics.fmean(v for row in x for v in row)
    n_r, n_s = len(rows), len(seeds)
    ss_row = n_s * sum((statistics.fmean(row) - grand) ** 2 for row in x)
    ss_seed = n_r * sum((statistics.fmean(x[i][j] for i in range(n_r)) - grand) ** 2 for j in range(n_s))
    ss_total = sum((v - grand) ** 2 for row in x for v in row)
    ss_res = max(ss_total - ss_row - ss_seed, 0.0)
    df_res = (n_r - 1) * (n_s - 1)

    def p_value(ss: float, df: int) -> float:
        if ss_res == 0:
            return 0.0 if ss > 0 else 1.0
        return float(stats.f.sf((ss / df) / (ss_res / df_res), df, df_res))

    share = (lambda ss: ss / ss_total) if ss_total > 0 else (lambda ss: 0.0)
    return {"recipe": (share(ss_row), p_value(ss_row, n_r - 1)), "seed": (share(ss_seed), p_value(ss_seed, n_s - 1)),
            "residual": (share(ss_res), math.nan), "seeds": (float(n_s), math.nan)}


def fmt_pm(mean: float, half: float) -> str:
    return f"{mean:+.3f}" if math.isnan(half) else f"{mean:+.3f} ± {half:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="+", help="recipe names (run folders ROOT/<recipe>-s<seed>)")
    ap.add_argument("--control", required=True, help="the recipe every row is compared with (its untrained control)")
    ap.add_argument("--root", type=Path, default=Path("runs/tables"), help="folder of the runs (default runs/tables)")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                    help="only these seeds, comma-separated: 0,1,2 (default: every scored one)")
    ap.add_argument("--metric", help="results key (default map50, else top1)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root}: no such folder of runs", file=sys.stderr)
        return 2

    def scores_of(recipe: str) -> Scores:
        found = read_scores(args.root, recipe, args.metric)
        return {s: v for s, v in found.items() if args.seeds is None or s in args.seeds}

    control = scores_of(args.control)
    if not control:
        print(f"error: no scored run {args.root}/{args.control}-s<seed>/test/results.json; "
              "run scripts/vat_experiments.py first", file=sys.stderr)
        return 2
    table = {r: scores_of(r) for r in args.recipes}
    if missing := [r for r, v in table.items() if not v]:
        print(f"error: no scored runs of {', '.join(missing)} under {args.root}", file=sys.stderr)
        return 2

    print(f"{args.root}: test scores over seeds; differences to {args.control} with 95 % t-intervals\n")
    print("| recipe | seeds | mean ± sd | per seed | paired difference to the control (seeds) | Welch difference |")
    print("|---|---|---|---|---|---|")
    for name, scores in {args.control: control, **table}.items():
        values = [scores[s] for s in sorted(scores)]
        sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        per = " / ".join(f"{v:.3f}" for v in values)
        seeds = ",".join(str(s) for s in sorted(scores))
        if name == args.control:
            print(f"| {name} (control) | {seeds} | {statistics.fmean(values):.3f}{sd} | {per} | – | – |")
            continue
        n, diff, half = paired_difference(scores, control)
        welch = welch_difference(values, list(control.values()))
        print(f"| {name} | {seeds} | {statistics.fmean(values):.3f}{sd} | {per} | {fmt_pm(diff, half)} ({n}) "
              f"| {fmt_pm(*welch)} |")
    if len(table) >= 2:
        try:
            parts = two_way(table)
        except ValueError as err:
            print(f"\n(no recipe x seed decomposition: {err})")
        else:
            print(f"\nRecipes x seeds ({len(table)} recipes, the {int(parts['seeds'][0])} seeds all have): share of the "
                  f"spread from the recipe {parts['recipe'][0]:.0%} (F-test p {parts['recipe'][1]:.2f}), from the seed "
                  f"{parts['seed'][0]:.0%} (p {parts['seed'][1]:.2f}), residual {parts['residual'][0]:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
