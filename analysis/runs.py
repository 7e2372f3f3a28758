"""Sweep runs read back from MLflow and grouped by row (mean ± std over seeds).

A trial's child run carries the tags ``row``, ``row_index``, ``paper_label``,
``seed``, ``dataset`` (set by tune/run_ablation.py). Its metrics are stored as
fractions with step = epoch; the latest value of each is the run's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

METRICS = ("mAP", "top1")
ALL_METRICS = ("mAP", "top1", "top5", "top10", "det_ap", "det_recall")


@dataclass
class TrialRun:
    run_id: str
    row: str
    row_index: int
    paper_label: str
    seed: str
    dataset: str
    status: str
    start_time: int
    metrics: dict[str, float]


@dataclass
class Cell:
    """One metric of one row on one dataset, in fractions."""

    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample std (ddof=1); 0.0 for a single seed."""
        if len(self.values) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))


@dataclass
class RowSummary:
    row: str
    row_index: int
    paper_label: str
    cells: dict[tuple[str, str], Cell]  # (dataset, metric) -> Cell
    run_ids: dict[str, list[str]]  # dataset -> runs used
    seeds: dict[str, list[str]]  # dataset -> seeds used


def _run_to_trial(run) -> TrialRun | None:
    tags = run.data.tags
    if "row" not in tags:
        return None
    try:
        index = int(tags.get("row_index", 10**6))
    except ValueError:
        index = 10**6
    dataset = tags.get("dataset") or run.data.params.get("INPUT.DATASET", "?")
    return TrialRun(
        run.info.run_id,
        tags["row"],
        index,
        tags.get("paper_label", ""),
        tags.get("seed", "?"),
        dataset,
        run.info.status,
        int(run.info.start_time or 0),
        dict(run.data.metrics),
    )


def _search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_runs(client, *, parent_ids: list[str] = (), experiment: str | None = None) -> list[TrialRun]:
    """Child runs of the given sweep parents, or every trial run of an experiment.

    Raises ValueError naming the parent run / experiment when it does not exist.
    """
    out: list[TrialRun] = []
    for pid in parent_ids:
        try:
            parent = client.get_run(pid)
        except Exception:
            raise ValueError(f"--parent {pid}: no such MLflow run at {client.tracking_uri}") from None
        runs = _search_all(client, [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{pid}'")
        out.extend(t for t in map(_run_to_trial, runs) if t)
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments()]
            raise ValueError(
                f"--experiment {experiment}: no such MLflow experiment at {client.tracking_uri}; "
                f"known: {', '.join(names) or 'none'}"
            )
        out.extend(t for t in map(_run_to_trial, _search_all(client, [exp.experiment_id], "")) if t)
    return out


def summarize(runs: list[TrialRun], metrics: tuple[str, ...] = ALL_METRICS) -> tuple[list[RowSummary], list[TrialRun]]:
    """Group FINISHED runs by row; one run per (row, dataset, seed): the latest.

    Returns (rows ordered as in the grid, runs left out as unfinished).
    """
    left_out = [r for r in runs if r.status != "FINISHED"]
    latest: dict[tuple[str, str, str], TrialRun] = {}
    for r in runs:
        if r.status != "FINISHED":
            continue
        k = (r.row, r.dataset, r.seed)
        if k not in latest or r.start_time > latest[k].start_time:
            latest[k] = r
    rows: dict[str, RowSummary] = {}
    for r in sorted(latest.values(), key=lambda r: (r.row_index, r.row, r.dataset, r.seed)):
        s = rows.setdefault(r.row, RowSummary(r.row, r.row_index, r.paper_label, {}, {}, {}))
        s.run_ids.setdefault(r.dataset, []).append(r.run_id)
        s.seeds.setdefault(r.dataset, []).append(r.seed)
        for m in metrics:
            if m in r.metrics and not math.isnan(r.metrics[m]):
                s.cells.setdefault((r.dataset, m), Cell()).values.append(float(r.metrics[m]))
    ordered = sorted(rows.values(), key=lambda s: (s.row_index, s.row))
    return ordered, left_out


def datasets_of(rows: list[RowSummary]) -> list[str]:
    order = {"synthetic": 0, "prw": 1, "cuhk": 2}
    found = {ds for r in rows for ds in r.seeds}
    return sorted(found, key=lambda d: (order.get(d, 9), d))
