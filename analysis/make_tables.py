"""Tables of a sweep (or of an MLflow experiment) from MLflow.

Examples:
  python analysis/make_tables.py --parent RUN_ID                 # markdown to stdout
  python analysis/make_tables.py --experiment oimnet-smoke --all
  python analysis/make_tables.py --parent ID1 --parent ID2 --format latex --out table3.tex
  python analysis/make_tables.py --parent RUN_ID --plots plots/
  MLFLOW_TRACKING_URI=http://mlflow.example:5000 python analysis/make_tables.py --experiment oimnet

Rows are the grid's rows (child runs grouped by their `row` tag, FINISHED runs
only); each cell is mean ± std (sample std) over seeds, in %. Columns per
dataset: mAP and top-1 (with --all also top-5, top-10, detection AP and
recall). Rows labelled OIMNet++ / OIMNet+++ get the published value beside
ours (analysis/published_results.csv; secondary sources, see its `source`).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `analysis` and `oimnet` importable
    _root = str(Path(__file__).resolve().parents[1])
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root
    elif _root not in sys.path:
        sys.path.insert(0, _root)

from analysis.published import Published, load_published, published_for  # noqa: E402
from analysis.runs import ALL_METRICS, METRICS, RowSummary, datasets_of, load_runs, summarize  # noqa: E402

METRIC_NAMES = {
    "mAP": "mAP",
    "top1": "top-1",
    "top5": "top-5",
    "top10": "top-10",
    "det_ap": "det AP",
    "det_recall": "det recall",
}
DATASET_NAMES = {"synthetic": "Synthetic", "prw": "PRW", "cuhk": "CUHK-SYSU"}
PUBLISHED_METRICS = ("mAP", "top1")


def _fmt(cell, digits: int = 1) -> str:
    if cell is None or not cell.n:
        return "–"
    mean = f"{cell.mean * 100:.{digits}f}"
    return mean if cell.n == 1 else f"{mean} ± {cell.std * 100:.{digits}f}"


def _columns(rows: list[RowSummary], metrics: tuple[str, ...], published: dict[str, Published]):
    """[(dataset, metric, is_published)] in display order."""
    cols = []
    for ds in datasets_of(rows):
        cols += [(ds, m, False) for m in metrics]
        if any((p := published_for(r.paper_label, published)) and any(k[0] == ds for k in p.values) for r in rows):
            cols += [(ds, m, True) for m in PUBLISHED_METRICS if m in metrics]
    return cols


def _seeds_text(r: RowSummary) -> str:
    if len(r.seeds) == 1:
        return str(len(next(iter(r.seeds.values()))))
    return ", ".join(f"{DATASET_NAMES.get(d, d)} {len(s)}" for d, s in r.seeds.items())


def _header(ds: str, m: str, pub: bool) -> str:
    return f"{DATASET_NAMES.get(ds, ds)} {METRIC_NAMES[m]}" + (" (published†)" if pub else "")


def _value(r: RowSummary, ds: str, m: str, pub: bool, published) -> str:
    if pub:
        p = published_for(r.paper_label, published)
        v = p.values.get((ds, m)) if p else None
        return f"{v:.1f}†" if v is not None else ""
    return _fmt(r.cells.get((ds, m)))


def footnotes(rows, left_out, published, uses_published: bool) -> list[str]:
    notes = ["Values in %: mean ± std (sample) over seeds; a single seed shows the value alone."]
    if uses_published:
        sources = sorted({p.source for r in rows if (p := published_for(r.paper_label, published))})
        verified = sorted({p.verified for r in rows if (p := published_for(r.paper_label, published))})
        notes.append(
            f"† published numbers for {', '.join(sources)}, taken from secondary sources "
            f"(analysis/published_results.csv, verified: {', '.join(verified)}); not our runs."
        )
    if left_out:
        by = {}
        for r in left_out:
            by[r.status] = by.get(r.status, 0) + 1
        notes.append("Left out (not FINISHED): " + ", ".join(f"{n} {s}" for s, n in sorted(by.items())) + " run(s).")
    return notes


def render_markdown(rows, left_out, metrics, published) -> str:
    cols = _columns(rows, metrics, published)
    head = ["row", "paper label", "seeds"] + [_header(*c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(cols)) + "|"]
    for r in rows:
        vals = [r.row, r.paper_label or "", _seeds_text(r)] + [_value(r, *c, published) for c in cols]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in vals) + " |")
    lines.append("")
    lines += footnotes(rows, left_out, published, any(c[2] for c in cols))
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


def render_latex(rows, left_out, metrics, published) -> str:
    cols = _columns(rows, metrics, published)
    out = [r"\begin{tabular}{ll" + "r" * (1 + len(cols)) + "}", r"\toprule"]
    head = ["Row", "Paper label", "Seeds"] + [_tex(_header(*c)).replace("†", r"$^\dagger$") for c in cols]
    out.append(" & ".join(head) + r" \\")
    out.append(r"\midrule")
    for r in rows:
        vals = [_tex(r.row), _tex(r.paper_label or ""), _tex(_seeds_text(r))]
        for c in cols:
            v = _value(r, *c, published).replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("–", "--")
            vals.append(v)
        out.append(" & ".join(vals) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += ["% " + n for n in footnotes(rows, left_out, published, any(c[2] for c in cols))]
    return "\n".join(out) + "\n"


def render_csv(rows, left_out, metrics, published) -> str:
    """Long format, one line per (row, dataset); values in % (full precision)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["row", "paper_label", "dataset", "n_seeds"]
    for m in metrics:
        head += [f"{m}_pct_mean", f"{m}_pct_std"]
    head += [f"published_{m}_pct" for m in PUBLISHED_METRICS if m in metrics] + ["published_source"]
    w.writerow(head)
    for r in rows:
        for ds in r.seeds:
            line = [r.row, r.paper_label, ds, len(r.seeds[ds])]
            for m in metrics:
                c = r.cells.get((ds, m))
                line += [f"{c.mean * 100:.6g}", f"{c.std * 100:.6g}"] if c and c.n else ["", ""]
            p = published_for(r.paper_label, published)
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
    rows, left_out = summarize(runs, metrics)
    published = load_published(published_path) if published_path else load_published()
    text = RENDERERS[fmt](rows, left_out, metrics, published)
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
