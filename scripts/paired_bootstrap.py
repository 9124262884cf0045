"""Paired bootstrap of score differences between evaluations of the same images (`taskbridge evaluate --bootstrap`).

How sure is "trained beats its control by 3 points on 50 photos"? Every `taskbridge evaluate --bootstrap N` of
the same images draws the same N resamples, so the difference of two evaluations' samples is a paired bootstrap
of their difference; averaging those differences over several pairs (e.g. three seeds, each run against its own
untrained control) gives the interval of the mean gain, the quantity a target like "+3 points, mean of 3 seeds"
names. Only the photos are resampled: the spread between seeds is shown by the pairs themselves.

    python scripts/paired_bootstrap.py \\
        --pair runs/bootstrap/dehaze-det-vat-learn-globalgate-step0-s0/test runs/bootstrap/dehaze-det-vat-learn-gateonly-s0/test \\
        --pair runs/bootstrap/dehaze-det-vat-learn-globalgate-step0-s1/test runs/bootstrap/dehaze-det-vat-learn-gateonly-s1/test

Each side is an evaluation folder or its results.json, optionally `:ROW` (default: the `translator` row, else
the only row). Prints one line per pair and one for their mean; `--json` also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from taskbridge.metrics.bootstrap import difference_samples, difference_summary


def load_row(spec: str) -> tuple[str, float, dict]:
    """(label, score, bootstrap summary) of one row of an evaluation; exits with one line when unusable."""
    path_s, _, row = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    path = Path(path_s)
    path = path / "results.json" if path.is_dir() else path
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"{path}: not a taskbridge evaluate results.json ({err})")
    row = row or ("translator" if "translator" in runs else (next(iter(runs)) if len(runs) == 1 else ""))
    if row not in runs:
        sys.exit(f"{path}: no row '{row}' (rows: {', '.join(runs)}); name one as {path_s}:ROW")
    spread = runs[row].get("bootstrap")
    if not spread:
        sys.exit(f"{path}: row '{row}' has no bootstrap; rerun `taskbridge evaluate ... --bootstrap 1000`")
    metric = next(iter(spread))
    return f"{path.parent}:{row}", float(runs[row][metric]), spread[metric]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, action="append", required=True, metavar=("BASE", "OTHER"),
                    help="two evaluations of the same images: the difference is OTHER minus BASE")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    rows, diffs = [], []
    for base_spec, other_spec in args.pair:
        (bn, bs, bb), (on, os_, ob) = load_row(base_spec), load_row(other_spec)
        samples = difference_samples(bb, ob)
        if samples is None:
            sys.exit(f"{base_spec} and {other_spec} were not resampled alike (other images, seed or count); "
                     "evaluate both on the same images with the same --bootstrap")
        d = difference_summary(samples)
        if d is None:
            sys.exit(f"{base_spec} and {other_spec}: fewer than two resamples where both have a score")
        diffs.append(samples)
        rows.append({"base": bn, "other": on, "base_score": bs, "other_score": os_, "difference": os_ - bs,
                     "se": d["se"], "ci95": d["ci95"], "p_better": d["p_better"],
                     "base_se": bb["se"], "other_se": ob["se"]})
    if len({len(x) for x in diffs}) != 1:
        sys.exit("the pairs were resampled a different number of times; use one --bootstrap count")
    # the mean over pairs: every pair saw the same resample b, so the per-resample mean is paired too
    with warnings.catch_warnings():  # a resample where no pair has a score is NaN, left out by the summary
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = difference_summary(np.nanmean(np.stack(diffs), axis=0))
    overall = {"pairs": len(rows), "difference": float(np.mean([r["difference"] for r in rows])),
               **{k: spread[k] for k in ("se", "ci95", "p_better")}}
    print(f"{'pair (other - base)':<70}{'base':>8}{'other':>8}{'diff':>8}{'SE':>7}{'95% interval':>18}{'better in':>11}")
    for r in rows:
        print(f"{(Path(r['other'].split(':')[0]).parent.name + ' - ' + Path(r['base'].split(':')[0]).parent.name)[:69]:<70}"
              f"{r['base_score']:>8.3f}{r['other_score']:>8.3f}{r['difference']:>+8.3f}{r['se']:>7.3f}"
              f"{r['ci95'][0]:>+9.3f}..{r['ci95'][1]:>+7.3f}{100 * r['p_better']:>10.1f}%")
    print(f"{'mean of the ' + str(len(rows)) + ' pairs':<70}{'':>8}{'':>8}{overall['difference']:>+8.3f}"
          f"{overall['se']:>7.3f}{overall['ci95'][0]:>+9.3f}..{overall['ci95'][1]:>+7.3f}{100 * overall['p_better']:>10.1f}%")
    result = {"pairs": rows, "mean": overall}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
