"""The report of a finished search: the best configuration (best.txt) and one plot per searched key.

Ranking: ASHA stops trials at a rung (an early epoch) while the others
train on, and a metric at epoch 2 is not comparable with one at epoch 4
(the later one has had twice the training). So trials are ranked on the
metric *at the same epoch*: the last epoch (``SOLVER.MAX_EPOCHS``) among
the trials that reached it. Trials stopped early are listed apart with
their value at their last rung, never ranked against the completed ones.
When no trial reached the last epoch (an interrupted search), the ranking
epoch is the highest one any trial reached; the report says which.

Metrics in [0, 1] (mAP, top-k, detection AP/recall, with or without the
``val_`` prefix: :data:`oimnet.constants.SCALAR_METRICS`) are printed as
percentages; any other metric (a loss) as its value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oimnet.constants import SCALAR_METRICS
from tune.search import STOPPED_TAG, Search, label


def is_fraction_metric(name: str) -> bool:
    """True for the evaluation metrics that are fractions in [0, 1] (``mAP``, ``val_top1``, ...)."""
    return name.removeprefix("val_") in SCALAR_METRICS


def format_metric(name: str, value: float) -> str:
    """``12.3 %`` for a fraction metric, ``0.4321`` for anything else."""
    return f"{value * 100:.1f} %" if is_fraction_metric(name) else f"{value:.4g}"


@dataclass
class SearchTrial:
    """One sampled configuration's MLflow child run, as the report needs it."""

    run_id: str
    values: dict[str, str]  # searched key -> logged value
    history: dict[int, float]  # epoch -> metric at that epoch
    stopped_at: int | None = None  # the epoch ASHA stopped it at, None when it ran on
    test: dict[str, float] = field(default_factory=dict)  # test-split metrics of the run (completed trials)

    @property
    def last_epoch(self) -> int:
        return max(self.history)

    @property
    def last_value(self) -> float:
        return self.history[self.last_epoch]


@dataclass
class Ranking:
    epoch: int  # the epoch the ranked trials are compared at
    is_last_epoch: bool  # epoch == SOLVER.MAX_EPOCHS
    ranked: list[SearchTrial]  # best first, all with a value at ``epoch``
    apart: list[SearchTrial]  # the others (stopped early, or ended before ``epoch``), by their last value


def rank_trials(trials: list[SearchTrial], mode: str, max_epochs: int) -> Ranking:
    """Rank at the last epoch the trials reached it; list the rest apart (see the module docstring)."""
    if not trials:
        raise ValueError("no trial to rank")
    reached = [t for t in trials if max_epochs in t.history]
    epoch = max_epochs if reached else max(t.last_epoch for t in trials)
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted((t for t in trials if epoch in t.history), key=lambda t: sign * t.history[epoch])
    apart = sorted((t for t in trials if epoch not in t.history), key=lambda t: sign * t.last_value)
    return Ranking(epoch, epoch == max_epochs, ranked, apart)


def report_text(ranking: Ranking, search: Search) -> str:
    """The text of best.txt (also printed at the end of the search)."""
    m = search.metric
    best = ranking.ranked[0]
    n_stopped = sum(1 for t in ranking.ranked + ranking.apart if t.stopped_at is not None)
    where = (
        f"the last epoch ({ranking.epoch}), among the {len(ranking.ranked)} trial(s) that reached it"
        if ranking.is_last_epoch
        else f"epoch {ranking.epoch}, the furthest any trial got (none reached the last epoch)"
    )
    lines = [
        f"search: {len(ranking.ranked) + len(ranking.apart)} trials with {m} ({n_stopped} stopped early by ASHA); "
        f"ranked on {m} at {where}; trials that stopped before it are listed apart, at their last rung.",
        f"best {m} = {format_metric(m, best.history[ranking.epoch])} at epoch {ranking.epoch}, run {best.run_id}:",
    ]
    lines += [f"  {k} = {v}" for k, v in best.values.items()]
    if "mAP" in best.test and m != "mAP":
        lines.append(f"  (its test mAP = {format_metric('mAP', best.test['mAP'])}; chosen on {m})")
    lines.append("  rerun it with seeds: --set " + " --set ".join(f"{k}={v}" for k, v in best.values.items()))
    lines.append(f"ranked ({m} at epoch {ranking.epoch}, best first):")
    for i, t in enumerate(ranking.ranked, 1):
        test = f"  test mAP {format_metric('mAP', t.test['mAP'])}" if "mAP" in t.test else ""
        lines.append(f"  {i}. {format_metric(m, t.history[ranking.epoch])}  {_values_label(t)}{test}")
    if ranking.apart:
        lines.append(f"not ranked: stopped before epoch {ranking.epoch} ({m} at their last rung):")
        for t in ranking.apart:
            why = f"stopped early by ASHA at epoch {t.stopped_at}" if t.stopped_at is not None else "ended"
            lines.append(f"  {format_metric(m, t.last_value)} at epoch {t.last_epoch}  {_values_label(t)}  ({why})")
    return "\n".join(lines)


def _values_label(t: SearchTrial) -> str:
    def num(v: str):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v

    return label({k: num(v) for k, v in t.values.items()})


def load_trials(tracking_uri: str, parent_run_id: str, search: Search) -> tuple[list[SearchTrial], int]:
    """The FINISHED child runs of a search that logged its metric, and SOLVER.MAX_EPOCHS (from their params)."""
    from oimnet.engine.tracking import get_client

    client = get_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )
    trials, max_epochs = [], 0
    for r in runs:
        if search.metric not in r.data.metrics or r.info.status != "FINISHED":
            continue
        history = {int(h.step): float(h.value) for h in client.get_metric_history(r.info.run_id, search.metric)}
        stopped = r.data.tags.get(STOPPED_TAG)
        test = {} if stopped is not None else {k: v for k, v in r.data.metrics.items() if k in SCALAR_METRICS}
        trials.append(
            SearchTrial(
                run_id=r.info.run_id,
                values={k: r.data.params.get(k) for k in search.keys},
                history=history,
                stopped_at=int(stopped) if stopped is not None else None,
                test=test,
            )
        )
        max_epochs = max(max_epochs, int(r.data.params.get("SOLVER.MAX_EPOCHS", 0) or 0))
    return trials, max_epochs


def best_and_plot(tracking_uri: str, parent_run_id: str, search: Search, out_dir: Path) -> tuple[str, list[Path]]:
    """The report text (see :func:`report_text`) and one PNG per searched key: (text, files)."""
    trials, max_epochs = load_trials(tracking_uri, parent_run_id, search)
    if not trials:
        return f"(search: no FINISHED trial reported {search.metric})", []
    ranking = rank_trials(trials, search.mode, max_epochs or max(t.last_epoch for t in trials))
    return report_text(ranking, search), plot_search(ranking, search, out_dir)


def _xs(trials: list[SearchTrial], search: Search, key: str):
    """The x position of each trial on a key's plot: its value, or its choice's index."""
    import numpy as np

    if next(iter(search.space[key])) == "choice":
        cats = [str(c) for c in search.space[key]["choice"]]
        return np.array([cats.index(str(t.values[key])) if str(t.values[key]) in cats else -1 for t in trials])
    return np.array([float(t.values[key]) for t in trials])


def plot_search(ranking: Ranking, search: Search, out_dir: Path) -> list[Path]:
    """``search_<KEY>.png`` per searched key: ranked trials at the ranking epoch, the others at their last rung."""
    import matplotlib
    import matplotlib.ticker
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if is_fraction_metric(search.metric) else 1.0
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for key in search.keys:
        kind = next(iter(search.space[key]))
        fig, ax = plt.subplots(figsize=(8, 4))
        if kind == "choice":
            cats = [str(c) for c in search.space[key]["choice"]]
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats)
        elif kind == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
        e = ranking.epoch
        ranked_y = np.array([t.history[e] * scale for t in ranking.ranked])
        ranked_x = _xs(ranking.ranked, search, key)
        ax.scatter(ranked_x, ranked_y, label=f"reached epoch {e} (ranked)", zorder=3)
        if ranking.apart:
            ax.scatter(
                _xs(ranking.apart, search, key),
                [t.last_value * scale for t in ranking.apart],
                marker="x",
                label="stopped early (ASHA): at its last rung, not ranked",
                zorder=3,
            )
        ax.scatter([ranked_x[0]], [ranked_y[0]], s=160, facecolors="none", edgecolors="k", label="best", zorder=4)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{search.metric} (%)" if scale == 100.0 else search.metric)
        ax.set_title(f"{search.metric} against {key.split('.')[-1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        p = out_dir / f"search_{key.replace('.', '_')}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        files.append(p)
    return files
