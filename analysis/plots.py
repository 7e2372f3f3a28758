"""PNG figures of a sweep: mAP per epoch per row, and the table as bars.

Files (one pair per dataset):
  ``map_per_epoch_<dataset>.png``: x = epoch, y = mAP in %, one line per
  row (mean over seeds, band = 95 % confidence interval of the mean where
  several seeds).
  ``table_<dataset>.png``: grouped bars of mAP and top-1 in % per row
  (error bars = 95 % confidence interval of the mean over seeds, none for
  one seed); published values (secondary sources) as black diamonds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.published import Published, published_for
from analysis.runs import Cell, RowSummary, datasets_of
from analysis.stats import describe

DATASET_NAMES = {"synthetic": "Synthetic", "prw": "PRW", "cuhk": "CUHK-SYSU"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def MaxNLocator(**kw):
    from matplotlib.ticker import MaxNLocator as _M

    return _M(**kw)


def map_history(client, run_ids: list[str], metric: str = "mAP") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean %, 95 % CI half-width %) of one row over its runs, on the epochs all runs logged
    (half-width 0 for one run)."""
    per_run: list[dict[int, float]] = []
    for rid in run_ids:
        hist = client.get_metric_history(rid, metric)
        per_run.append({int(m.step): float(m.value) * 100.0 for m in hist})
    if not per_run:
        return np.array([]), np.array([]), np.array([])
    epochs = sorted(set.intersection(*(set(h) for h in per_run)))
    vals = np.array([[h[e] for e in epochs] for h in per_run])  # (runs, epochs)
    half = (
        np.array([describe(vals[:, j]).half_width for j in range(len(epochs))])
        if len(per_run) > 1
        else np.zeros(len(epochs))
    )
    return np.array(epochs), vals.mean(axis=0), half


def clipped_yerr(means, halves) -> np.ndarray:
    """(2, n) error-bar lengths below / above each mean (in %) for mean +- half, cut at 0 and 100 %.

    A t-interval over two or three seeds is wide and reaches below 0 for a
    small mean; a metric in [0, 100] % cannot, so the bar stops there.
    """
    m, h = np.nan_to_num(np.asarray(means, float)), np.asarray(halves, float)
    return np.stack([np.minimum(h, m), np.minimum(h, 100.0 - m)])


def _ci_half(cell: Cell | None) -> float:
    """95 % CI half-width in % (0 for one seed or none)."""
    if cell is None or cell.n < 2:
        return 0.0
    return describe(cell.values).half_width * 100


def write_plots(
    client, rows: list[RowSummary], out_dir: str | Path, published: dict[str, Published] | None = None
) -> list[Path]:
    """Write the PNGs of every dataset in ``rows``; returns their paths."""
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for ds in datasets_of(rows):
        name = DATASET_NAMES.get(ds, ds)
        present = [r for r in rows if ds in r.run_ids]

        fig, ax = plt.subplots(figsize=(7, 4.5))
        # per epoch: the validation mAP when the runs had a split (the test split is scored only at the end)
        curve = "val_mAP" if any((ds, "val_mAP") in r.cells for r in present) else "mAP"
        for r in present:
            ep, mean, half = map_history(client, r.run_ids[ds], curve)
            if not len(ep):
                continue
            (line,) = ax.plot(ep, mean, marker="o", label=r.row)
            if np.nan_to_num(half).any():
                lo, hi = np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100)
                ax.fill_between(ep, lo, hi, color=line.get_color(), alpha=0.15)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{'validation' if curve == 'val_mAP' else 'test'} mAP (%)")
        ax.set_title(f"{name}: {curve} per epoch (mean over seeds, band: 95 % CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"map_per_epoch_{ds}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(present) + 2), 4.5))
        x = np.arange(len(present))
        width = 0.38
        pub_labelled = False
        for j, (metric, label) in enumerate((("mAP", "mAP"), ("top1", "top-1"))):
            means = [r.cells[(ds, metric)].mean * 100 if (ds, metric) in r.cells else np.nan for r in present]
            halves = [_ci_half(r.cells.get((ds, metric))) for r in present]
            ax.bar(x + (j - 0.5) * width, means, width, yerr=clipped_yerr(means, halves), capsize=3, label=label)
            for i, r in enumerate(present):
                pub = published_for(r.paper_label, published or {})
                if pub and (ds, metric) in pub.values:
                    ax.plot(
                        x[i] + (j - 0.5) * width,
                        pub.values[(ds, metric)],
                        "kD",
                        markersize=6,
                        label=None if pub_labelled else "published (secondary sources)",
                    )
                    pub_labelled = True
        ax.set_xticks(x)
        ax.set_xticklabels([r.row for r in present], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("%")
        ax.set_title(f"{name}: final mAP and top-1 per row (bars: 95 % CI over seeds, cut at 0 %)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = out_dir / f"table_{ds}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written
