"""Tables of a sweep (or of an MLflow experiment) from MLflow.

Examples:
  python analysis/make_tables.py --parent RUN_ID                 # markdown to stdout
  python analysis/make_tables.py --experiment oimnet-smoke --all
  python analysis/make_tables.py --parent ID1 --parent ID2 --format latex --out table3.tex
  python analysis/make_tables.py --parent RUN_ID --plots plots/
  MLFLOW_TRACKING_URI=http://mlflow.example:5000 python analysis/make_tables.py --experiment oimnet

Rows are what ran: FINISHED child runs grouped by the logged config values
that differ between them (analysis/runs.py); the grid's row name is the
row's label, and a run whose params disagree with its label is shown apart
and flagged (⚠). Each cell is in %: with several seeds mean ± sample std and
the 95 % confidence interval of the mean (t-distribution); columns "Δ vs
OIMNet" give each row's mean paired difference from the OIMNet row over the
seeds both ran, its 95 % interval and the paired t-test p-value, and a
sentence under the table says which differences are significant at 5 %.
With one seed the table says that nothing can be concluded. Columns per
dataset: mAP and top-1 (with --all also top-5, top-10, detection AP and
recall). Rows labelled OIMNet++ / OIMNet+++ get the published value beside
ours (analysis/published_results.csv; secondary sources, see its `source`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis.published import Published, load_published, published_for
from analysis.runs import (
    ALL_METRICS,
    METRICS,
    RowSummary,
    baseline_row,
    datasets_of,
    load_runs,
    summarize,
)
from analysis.stats import ALPHA, Paired, describe, paired
from oimnet.constants import HEADLINE_METRICS

METRIC_NAMES = {
    "mAP": "mAP",
    "top1": "top-1",
    "top5": "top-5",
    "top10": "top-10",
    "det_ap": "det AP",
    "det_recall": "det recall",
    "val_mAP": "val mAP",
}
DATASET_NAMES = {"synthetic": "Synthetic", "prw": "PRW", "cuhk": "CUHK-SYSU"}
PUBLISHED_METRICS = HEADLINE_METRICS
PAIRED_METRICS = HEADLINE_METRICS  # compared with the baseline row
BASELINE_LABEL = "OIMNet"
VAL_METRIC = "val_mAP"  # runs with a validation split: chosen on it, reported beside the test numbers


def _pct(x: float, digits: int = 1, sign: bool = False) -> str:
    return f"{x * 100:{'+' if sign else ''}.{digits}f}"


def _fmt(cell, digits: int = 1) -> str:
    """'53.0' for one seed, 'mean ± std [95 % CI]' for several (in %)."""
    if cell is None or not cell.n:
        return "–"
    d = describe(cell.values)
    if d.n == 1:
        return _pct(d.mean, digits)
    return f"{_pct(d.mean, digits)} ± {_pct(d.std, digits)} [{_pct(d.ci_low, digits)}, {_pct(d.ci_high, digits)}]"


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _fmt_diff(pr: Paired | None, digits: int = 1) -> str:
    if pr is None or pr.n == 0:
        return "–"
    d = pr.diff
    if pr.n == 1:
        return f"{_pct(d.mean, digits, sign=True)} (1 seed)"
    if pr.same_shift:
        return f"{_pct(d.mean, digits, sign=True)} on every seed (no spread: no test)"
    return (
        f"{_pct(d.mean, digits, sign=True)} [{_pct(d.ci_low, digits, sign=True)}, "
        f"{_pct(d.ci_high, digits, sign=True)}] {_p_text(pr.p_value)}"
    )


@dataclass
class Table:
    """What every renderer draws: rows, columns and the comparisons with the baseline."""

    rows: list[RowSummary]
    left_out: list
    metrics: tuple[str, ...]
    published: dict[str, Published]
    baseline: RowSummary | None
    multi_seed: bool  # some row has 2+ seeds on some dataset
    diffs: dict[tuple[str, str, str], Paired]  # (row, dataset, metric) -> paired difference from the baseline
    columns: list[tuple[str, str, str]]  # (dataset, metric, kind): kind "ours", "diff" or "published"


def build_table(rows, left_out, metrics, published, baseline_label: str = BASELINE_LABEL) -> Table:
    base = baseline_row(rows, baseline_label)
    multi = any(len(s) > 1 for r in rows for s in r.seeds.values())
    diffs: dict[tuple[str, str, str], Paired] = {}
    if base is not None:
        for r in rows:
            if r is base:
                continue
            for (ds, m), cell in r.cells.items():
                if m in PAIRED_METRICS and (ds, m) in base.cells:
                    diffs[(r.row, ds, m)] = paired(cell.by_seed, base.cells[(ds, m)].by_seed)
    cols = []
    for ds in datasets_of(rows):
        cols += [(ds, m, "ours") for m in metrics]
        if base is not None and multi and len(rows) > 1:
            cols += [(ds, m, "diff") for m in PAIRED_METRICS if m in metrics]
        if any((p := published_for(r.paper_label, published)) and any(k[0] == ds for k in p.values) for r in rows):
            cols += [(ds, m, "published") for m in PUBLISHED_METRICS if m in metrics]
    return Table(rows, left_out, metrics, published, base, multi, diffs, cols)


def _seeds_text(r: RowSummary) -> str:
    if len(r.seeds) == 1:
        return str(len(next(iter(r.seeds.values()))))
    return ", ".join(f"{DATASET_NAMES.get(d, d)} {len(s)}" for d, s in r.seeds.items())


def _config_text(r: RowSummary) -> str:
    return " ".join(f"{k.removeprefix('MODEL.')}={v}" for k, v in r.config.items())


def _header(t: Table, ds: str, m: str, kind: str) -> str:
    head = f"{DATASET_NAMES.get(ds, ds)} {METRIC_NAMES[m]}"
    if kind == "diff":
        return f"{head} Δ vs {t.baseline.row}"
    return head + (" (published†)" if kind == "published" else "")


def _value(t: Table, r: RowSummary, ds: str, m: str, kind: str) -> str:
    if kind == "published":
        p = published_for(r.paper_label, t.published)
        v = p.values.get((ds, m)) if p else None
        return f"{v:.1f}†" if v is not None else ""
    if kind == "diff":
        if r is t.baseline:
            return "(baseline)" if (ds, m) in r.cells else "–"
        return _fmt_diff(t.diffs.get((r.row, ds, m)))
    return _fmt(r.cells.get((ds, m)))


def conclusions(t: Table) -> list[str]:
    """The sentences saying which differences from the baseline are significant (or that none can be told)."""
    if not t.multi_seed:
        return [
            (
                "One seed per row: no intervals and no tests, so nothing can be concluded about which "
                "differences are real (seed noise alone moves these numbers); run with --seeds 3 or more."
            )
        ]
    if t.baseline is None:
        return [f"No row labelled {BASELINE_LABEL}: no paired comparisons."]
    out = []
    for ds in datasets_of(t.rows):
        found, same = [], []
        for r in t.rows:
            for m in PAIRED_METRICS:
                pr = t.diffs.get((r.row, ds, m))
                if pr is not None and pr.significant():
                    found.append(
                        f"{r.row} in {METRIC_NAMES[m]} ({_pct(pr.diff.mean, 1, sign=True)} points, "
                        f"{_p_text(pr.p_value)}, {pr.n} seeds)"
                    )
                elif pr is not None and pr.same_shift:
                    same.append(f"{r.row} in {METRIC_NAMES[m]} ({_pct(pr.diff.mean, 1, sign=True)} points)")
        where = DATASET_NAMES.get(ds, ds)
        if found:
            out.append(
                f"{where}: at the {ALPHA:.0%} level (two-sided paired t-test over shared seeds), "
                f"these differ significantly from {t.baseline.row}: " + "; ".join(found) + "; no other row/metric does."
            )
        else:
            out.append(
                f"{where}: no row differs significantly from {t.baseline.row} "
                f"(two-sided paired t-test over shared seeds, {ALPHA:.0%} level)."
            )
        if same:
            out.append(
                f"{where}: not tested, the difference is the same on every seed (no spread to test "
                "against; with few seeds of a discrete metric such as top-1 this happens by chance): "
                + "; ".join(same)
                + "."
            )
    out.append(
        "Each test is on its own (no correction for the number of rows compared); with few seeds "
        "only large differences can reach significance, and a non-significant one is not evidence "
        "of no difference."
    )
    return out


def footnotes(t: Table) -> list[str]:
    notes = []
    if VAL_METRIC in t.metrics:
        notes.append(
            "mAP, top-1 (and Δ): the test split, evaluated once after the last epoch; val mAP: the "
            "identity-disjoint validation split carved from the training set, which sweeps rank and stop on."
        )
    if t.multi_seed:
        notes.append(
            "Values in %: mean ± sample std [95 % confidence interval of the mean, t-distribution] "
            "over seeds; a single seed shows the value alone."
        )
        if any(c[2] == "diff" for c in t.columns):
            notes.append(
                f"Δ vs {t.baseline.row}: mean of the per-seed differences (same seed = same data order "
                "and initialisation) [95 % CI] and the paired t-test p-value, over the seeds both rows ran."
            )
    else:
        notes.append("Values in %, one seed each.")
    uses_published = any(c[2] == "published" for c in t.columns)
    if uses_published:
        sources = sorted({p.source for r in t.rows if (p := published_for(r.paper_label, t.published))})
        verified = sorted({p.verified for r in t.rows if (p := published_for(r.paper_label, t.published))})
        notes.append(
            f"† published numbers for {', '.join(sources)}, taken from secondary sources "
            f"(analysis/published_results.csv, verified: {', '.join(verified)}); not our runs."
        )
    for r in t.rows:
        if r.flag:
            runs = ", ".join(i[:8] for ids in r.run_ids.values() for i in ids)
            notes.append(f"⚠ {r.row} (run {runs}): {r.flag}; shown apart, not pooled, no published value.")
    if t.left_out:
        by = {}
        for r in t.left_out:
            by[r.status] = by.get(r.status, 0) + 1
        notes.append("Left out (not FINISHED): " + ", ".join(f"{n} {s}" for s, n in sorted(by.items())) + " run(s).")
    return notes


def render_markdown(t: Table) -> str:
    head = ["row", "paper label", "config", "seeds"] + [_header(t, *c) for c in t.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(t.columns)) + "|"]
    for r in t.rows:
        vals = [r.row, r.paper_label or "", _config_text(r), _seeds_text(r)] + [_value(t, r, *c) for c in t.columns]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    lines.append("")
    lines += conclusions(t)
    lines.append("")
    lines += footnotes(t)
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\^{}"),
    ):
        text = text.replace(a, b)
    return text


def _tex_value(v: str) -> str:
    v = _tex(v)
    for a, b in (("±", r"$\pm$"), ("†", r"$^\dagger$"), ("–", "--"), ("Δ", r"$\Delta$"), ("⚠", "(!)"), ("p<", "p$<$")):
        v = v.replace(a, b)
    return v


def render_latex(t: Table) -> str:
    out = [r"\begin{tabular}{lll" + "r" * (1 + len(t.columns)) + "}", r"\toprule"]
    head = ["Row", "Paper label", "Config", "Seeds"] + [_tex_value(_header(t, *c)) for c in t.columns]
    out.append(" & ".join(head) + r" \\")
    out.append(r"\midrule")
    for r in t.rows:
        vals = [_tex_value(r.row), _tex(r.paper_label or ""), _tex(_config_text(r)), _tex(_seeds_text(r))]
        vals += [_tex_value(_value(t, r, *c)) for c in t.columns]
        out.append(" & ".join(vals) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += ["% " + n for n in conclusions(t) + footnotes(t)]
    return "\n".join(out) + "\n"


def render_csv(t: Table) -> str:
    """Long format, one line per (row, dataset); values in % (full precision)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    metrics = t.metrics
    head = ["row", "paper_label", "config", "flag", "dataset", "n_seeds"]
    for m in metrics:
        head += [f"{m}_pct_mean", f"{m}_pct_std", f"{m}_pct_ci95_low", f"{m}_pct_ci95_high"]
    for m in PAIRED_METRICS:
        if m in metrics:
            head += [
                f"{m}_diff_pct",
                f"{m}_diff_pct_ci95_low",
                f"{m}_diff_pct_ci95_high",
                f"{m}_diff_p",
                f"{m}_diff_n_seeds",
            ]
    head += [f"published_{m}_pct" for m in PUBLISHED_METRICS if m in metrics] + ["published_source"]
    w.writerow(head)

    def g(x):
        return "" if x is None or math.isnan(x) else f"{x:.6g}"

    for r in t.rows:
        for ds in r.seeds:
            line = [r.row, r.paper_label, _config_text(r), r.flag, ds, len(r.seeds[ds])]
            for m in metrics:
                c = r.cells.get((ds, m))
                if c and c.n:
                    d = describe(c.values)
                    line += [g(d.mean * 100), g(d.std * 100), g(d.ci_low * 100), g(d.ci_high * 100)]
                else:
                    line += ["", "", "", ""]
            for m in PAIRED_METRICS:
                if m in metrics:
                    pr = t.diffs.get((r.row, ds, m))
                    if pr is not None and pr.n:
                        line += [
                            g(pr.diff.mean * 100),
                            g(pr.diff.ci_low * 100),
                            g(pr.diff.ci_high * 100),
                            g(pr.p_value),
                            pr.n,
                        ]
                    else:
                        line += ["", "", "", "", ""]
            p = published_for(r.paper_label, t.published)
            line += [
                (f"{p.values[(ds, m)]:g}" if p and (ds, m) in p.values else "")
                for m in PUBLISHED_METRICS
                if m in metrics
            ]
            line.append(f"{p.source} ({p.verified})" if p and any(k[0] == ds for k in p.values) else "")
            w.writerow(line)
    return buf.getvalue()


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


def make_table(
    *,
    parent_ids: list[str] = (),
    experiment: str | None = None,
    tracking_uri: str | None = None,
    fmt: str = "markdown",
    all_metrics: bool = False,
    plots_dir: str | Path | None = None,
    published_path: str | Path | None = None,
) -> tuple[str, list[Path]]:
    """The table text and the PNGs written (empty without plots_dir).

    Raises ValueError when the parent run / experiment is unknown or holds no
    trial runs.
    """
    from oimnet.engine.tracking import get_client

    client = get_client(tracking_uri)
    runs = load_runs(client, parent_ids=list(parent_ids), experiment=experiment)
    if not runs:
        what = f"--parent {', '.join(parent_ids)}" if parent_ids else f"--experiment {experiment}"
        raise ValueError(f"{what}: no sweep trial runs (runs tagged `row`) at {client.tracking_uri}")
    metrics = ALL_METRICS if all_metrics else METRICS
    if any(VAL_METRIC in r.metrics for r in runs):  # trained with a validation split: its mAP beside the test's
        metrics = (metrics[0], VAL_METRIC, *metrics[1:])
    rows, left_out = summarize(runs, metrics)
    published = load_published(published_path) if published_path else load_published()
    table = build_table(rows, left_out, metrics, published)
    text = RENDERERS[fmt](table)
    plots: list[Path] = []
    if plots_dir:
        from analysis.plots import write_plots

        plots = write_plots(client, rows, plots_dir, published)
    return text, plots


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python analysis/make_tables.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("which runs (at least one)")
    src.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="RUN_ID",
        help="a sweep's MLflow parent run (repeat to combine sweeps, e.g. PRW and CUHK-SYSU)",
    )
    src.add_argument("--experiment", metavar="NAME", help="every sweep trial run of this MLflow experiment")
    p.add_argument("--format", choices=sorted(RENDERERS), default="markdown")
    p.add_argument("--out", metavar="FILE", help="write the table here instead of stdout")
    p.add_argument("--all", action="store_true", help="also top-5, top-10, detection AP and recall")
    p.add_argument("--plots", metavar="DIR", help="write PNGs (mAP per epoch per row; the table as bars)")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the project's local store)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.parent and not args.experiment:
        print("error: give --parent RUN_ID or --experiment NAME", file=sys.stderr)
        return 2
    try:
        text, plots = make_table(
            parent_ids=args.parent,
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
            fmt=args.format,
            all_metrics=args.all,
            plots_dir=args.plots,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for p in plots:
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
