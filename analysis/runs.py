"""Sweep runs read back from MLflow and grouped into table rows by what ran.

A trial's child run carries the tags ``row``, ``row_index``, ``paper_label``,
``seed``, ``dataset`` (set by tune/run_ablation.py) and its whole flat config
as params. Its metrics are stored as fractions with step = epoch; the latest
value of each is the run's result.

Rows are built from the params, not from the tags: the config keys whose
logged values differ between runs of one dataset (bookkeeping keys such as
seeds, paths and MLflow names left out) make a run's *signature*, and the
runs sharing a signature are one row. The ``row`` tag is only the row's
label. When the runs carrying one label have different signatures, the
signature most of them share keeps the label and every other one is shown
as a row of its own, flagged with the keys that disagree (e.g. a ``--set
MODEL.LOSS.OIM_EPS=0.2`` run tagged OIMNet++). A run whose params contradict
its ``paper_label`` (see :data:`PAPER_METHODS`) is flagged too, so that no
published number stands beside it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from oimnet.constants import HEADLINE_METRICS

METRICS = HEADLINE_METRICS
ALL_METRICS = ("mAP", "top1", "top5", "top10", "det_ap", "det_recall")  # the columns `--all` shows

# Logged params that do not change what is trained or measured.
BOOKKEEPING_KEYS = frozenset(
    {
        "SEED",
        "SEED_USED",
        "OUTPUT_DIR",
        "DEVICE",
        "INPUT.DATA_ROOT",
        "INPUT.DATASET",
        "DISP_PERIOD",
        "CKPT_PERIOD",
        "INPUT.NUM_WORKERS_TRAIN",
        "INPUT.NUM_WORKERS_TEST",
        "INPUT.BATCH_SIZE_TEST",
    }
)
BOOKKEEPING_PREFIXES = ("MLFLOW.",)

# What a paper label stands for, as logged param values (str(value) as MLflow stores them).
_OIM = {"MODEL.LOSS.TYPE": "OIM"}
_LOIM = {"MODEL.LOSS.TYPE": "LOIM", "MODEL.LOSS.OIM_EPS": "0.1"}
_AUG0 = {"MODEL.ROI_HEAD.AUGMENT": "False"}
PAPER_METHODS: dict[str, dict[str, str]] = {
    "OIMNet": {"MODEL.ROI_HEAD.NORM_TYPE": "none", **_OIM, **_AUG0},
    "OIMNet + BatchNorm": {"MODEL.ROI_HEAD.NORM_TYPE": "batchnorm", **_OIM, **_AUG0},
    "OIMNet + ProtoNorm": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", **_OIM, **_AUG0},
    "OIMNet + LOIM": {"MODEL.ROI_HEAD.NORM_TYPE": "none", **_LOIM, **_AUG0},
    "OIMNet + BatchNorm + LOIM": {"MODEL.ROI_HEAD.NORM_TYPE": "batchnorm", **_LOIM, **_AUG0},
    "OIMNet++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", **_LOIM, **_AUG0},
    "OIMNet+++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", **_LOIM, "MODEL.ROI_HEAD.AUGMENT": "True"},
}


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
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Cell:
    """One metric of one row on one dataset, in fractions, per seed."""

    by_seed: dict[str, float] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return list(self.by_seed.values())

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample std (ddof=1); 0.0 for a single seed."""
        if self.n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class RowSummary:
    row: str  # the label shown (the runs' `row` tag; flagged rows add what differs)
    row_index: int
    paper_label: str  # "" when the params contradict it
    cells: dict[tuple[str, str], Cell]  # (dataset, metric) -> Cell
    run_ids: dict[str, list[str]]  # dataset -> runs used
    seeds: dict[str, list[str]]  # dataset -> seeds used
    config: dict[str, str] = field(default_factory=dict)  # the varying keys' values of this row
    flag: str = ""  # why this row is shown apart ("" = its params agree with its label)


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
        dict(run.data.params),
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


def _is_bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING_KEYS or key.startswith(BOOKKEEPING_PREFIXES)


def varying_keys(runs: list[TrialRun]) -> list[str]:
    """Config keys whose logged values differ between runs of the same dataset.

    A key that differs only between datasets (LUT size of PRW vs CUHK-SYSU)
    does not split rows; neither does a bookkeeping key.
    """
    keys: set[str] = set()
    by_ds: dict[str, list[TrialRun]] = {}
    for r in runs:
        by_ds.setdefault(r.dataset, []).append(r)
    for group in by_ds.values():
        every = {k for r in group for k in r.params if not _is_bookkeeping(k)}
        keys |= {k for k in every if len({r.params.get(k) for r in group}) > 1}
    return sorted(keys)


def _contradiction(run: TrialRun) -> dict[str, tuple[str, str]]:
    """{key: (logged, expected)} where the params contradict the run's paper_label."""
    want = PAPER_METHODS.get(run.paper_label)
    if not want or not run.params:
        return {}
    return {k: (run.params[k], v) for k, v in want.items() if k in run.params and run.params[k] != v}


def summarize(runs: list[TrialRun], metrics: tuple[str, ...] = ALL_METRICS) -> tuple[list[RowSummary], list[TrialRun]]:
    """Group FINISHED runs into rows by their params; one run per (row, dataset, seed): the latest.

    Returns (rows ordered as in the grid, runs left out as unfinished).
    """
    left_out = [r for r in runs if r.status != "FINISHED"]
    done = [r for r in runs if r.status == "FINISHED"]
    keys = varying_keys(done)

    def signature(r: TrialRun) -> tuple:
        return tuple(r.params.get(k) for k in keys)

    latest: dict[tuple, TrialRun] = {}
    for r in done:
        k = (r.row, signature(r), r.dataset, r.seed)
        if k not in latest or r.start_time > latest[k].start_time:
            latest[k] = r
    # Each label's home signature: the one most of its runs share (ties: the first run's).
    home: dict[str, tuple] = {}
    for label in dict.fromkeys(r.row for r in sorted(latest.values(), key=lambda r: r.start_time)):
        counts = Counter(signature(r) for r in sorted(latest.values(), key=lambda r: r.start_time) if r.row == label)
        home[label] = counts.most_common(1)[0][0]

    groups: dict[tuple, list[TrialRun]] = {}
    for r in latest.values():
        groups.setdefault((r.row, signature(r)), []).append(r)
    rows: list[RowSummary] = []
    for (label, sig), members in groups.items():
        members.sort(key=lambda r: (r.dataset, r.seed))
        first = members[0]
        config = {k: v for k, v in zip(keys, sig) if v is not None}
        flags = []
        name = label
        if sig != home[label]:
            diff = {k: (v, h) for k, v, h in zip(keys, sig, home[label]) if v != h}
            name = f"{label} ⚠ " + " ".join(f"{k.split('.')[-1]}={v}" for k, (v, _) in diff.items())
            flags.append(
                f"params differ from the other runs labelled {label!r}: "
                + ", ".join(f"{k}={v} (they have {h})" for k, (v, h) in diff.items())
            )
        contra = _contradiction(first)
        if contra:
            flags.append(
                f"params contradict paper label {first.paper_label!r}: "
                + ", ".join(f"{k}={v} (the method has {w})" for k, (v, w) in contra.items())
            )
            if sig == home[label]:
                name = f"{label} ⚠"
        s = RowSummary(
            name,
            first.row_index + (0.5 if flags else 0),
            "" if flags else first.paper_label,
            {},
            {},
            {},
            config,
            "; ".join(flags),
        )
        for r in members:
            s.run_ids.setdefault(r.dataset, []).append(r.run_id)
            s.seeds.setdefault(r.dataset, []).append(r.seed)
            for m in metrics:
                if m in r.metrics and not math.isnan(r.metrics[m]):
                    s.cells.setdefault((r.dataset, m), Cell()).by_seed[r.seed] = float(r.metrics[m])
        rows.append(s)
    rows.sort(key=lambda s: (s.row_index, s.row))
    return rows, left_out


def baseline_row(rows: list[RowSummary], label: str = "OIMNet") -> RowSummary | None:
    """The unflagged row labelled (paper label or name) ``label``, else None."""
    for r in rows:
        if not r.flag and (r.paper_label == label or r.row == label):
            return r
    return None


def datasets_of(rows: list[RowSummary]) -> list[str]:
    order = {"synthetic": 0, "prw": 1, "cuhk": 2}
    found = {ds for r in rows for ds in r.seeds}
    return sorted(found, key=lambda d: (order.get(d, 9), d))
