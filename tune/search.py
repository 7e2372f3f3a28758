"""Hyper-parameter search as data: a grid file's ``search:`` section.

::

    search:
      algorithm: optuna          # or random (Tune's BasicVariantGenerator); default random
      num_samples: 8             # sampled configurations (trials)
      metric: val_mAP            # what the searcher and the scheduler maximise (default val_mAP)
      mode: max                  # or min
      seed: 0                    # seeds the sampler (default 0)
      space:                     # config key -> one distribution
        SOLVER.BASE_LR: {loguniform: [0.002, 0.05]}
        MODEL.LOSS.OIM_EPS: {uniform: [0.0, 0.3]}
        MODEL.ROI_HEAD.NORM_TYPE: {choice: [none, protonorm]}
      scheduler:                 # optional: ASHA early stopping on the metric
        type: asha
        grace_period: 2          # epochs before a trial can be stopped (a multiple of EVAL_PERIOD; default EVAL_PERIOD)
        reduction_factor: 2      # keep the best 1/reduction_factor at each rung

The grid's rows (times its axes) must expand to one base configuration; each
trial is that configuration with the sampled values on top, trained once
(seed 1) and tracked as one MLflow child run, tagged with its sampled values
as its row label. ASHA compares trials at epochs grace_period *
reduction_factor^k; the metric exists only at evaluation epochs, so the
rungs must fall on them (grace_period a multiple of EVAL_PERIOD). A trial
stopped by ASHA ends its MLflow run FINISHED with the tag ``stopped_early``
(the epoch), so its run has fewer epochs than the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

DISTRIBUTIONS = ("uniform", "loguniform", "choice")
ALGORITHMS = ("random", "optuna")
_SEARCH_KEYS = {"algorithm", "num_samples", "metric", "mode", "seed", "space", "scheduler"}
_SCHED_KEYS = {"type", "grace_period", "reduction_factor"}
STOPPED_TAG = "stopped_early"


class SearchError(ValueError):
    """A ``search:`` section problem; the message names the file and the key."""


@dataclass
class Search:
    """A validated ``search:`` section (plain data: saved in sweep.json)."""

    space: dict[str, dict[str, list]]  # key -> {distribution: args}
    num_samples: int
    algorithm: str = "random"
    metric: str = "val_mAP"
    mode: str = "max"
    seed: int = 0
    scheduler: dict[str, Any] | None = None  # {"type": "asha", "grace_period": int|None, "reduction_factor": int}
    keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Search | None:
        return cls(**d) if d else None


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SearchError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def parse_search(raw: Any, where: str) -> Search:
    """The ``search:`` mapping of a grid file -> :class:`Search` (structure only; values are checked by
    :func:`check_against_config`)."""
    if not isinstance(raw, dict):
        raise SearchError(f"{where}: expected a mapping with space, num_samples, algorithm, scheduler")
    unknown = sorted(set(raw) - _SEARCH_KEYS)
    if unknown:
        raise SearchError(f"{where}: unknown key {unknown[0]!r}; expected some of: {', '.join(sorted(_SEARCH_KEYS))}")
    algorithm = str(raw.get("algorithm", "random"))
    if algorithm not in ALGORITHMS:
        raise SearchError(f"{where}.algorithm: {algorithm!r}; expected one of: {', '.join(ALGORITHMS)}")
    n = raw.get("num_samples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SearchError(f"{where}.num_samples: expected a positive integer, got {n!r}")
    mode = str(raw.get("mode", "max"))
    if mode not in ("max", "min"):
        raise SearchError(f"{where}.mode: {mode!r}; expected max or min")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SearchError(f"{where}.seed: expected an integer, got {seed!r}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SearchError(f"{where}.space: expected a mapping of config key -> {{uniform|loguniform|choice: ...}}")
    space: dict[str, dict[str, list]] = {}
    for key, dist in space_raw.items():
        w = f"{where}.space.{key}"
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise SearchError(
                f"{w}: expected one of {{uniform: [low, high]}}, {{loguniform: [low, high]}}, "
                f"{{choice: [values]}}; got {dist!r}"
            )
        kind, args = next(iter(dist.items()))
        if not isinstance(args, list) or not args:
            raise SearchError(f"{w}.{kind}: expected a non-empty list, got {args!r}")
        if kind in ("uniform", "loguniform"):
            if len(args) != 2:
                raise SearchError(f"{w}.{kind}: expected [low, high], got {args!r}")
            low, high = (_number(a, f"{w}.{kind}") for a in args)
            if not low < high:
                raise SearchError(f"{w}.{kind}: low {low} must be below high {high}")
            if kind == "loguniform" and low <= 0:
                raise SearchError(f"{w}.loguniform: bounds must be positive, got {low}")
            args = [low, high]
        space[str(key)] = {kind: list(args)}
    sched = raw.get("scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or str(sched.get("type", "")).lower() != "asha":
            raise SearchError(f"{where}.scheduler: expected {{type: asha, grace_period: N, reduction_factor: N}}")
        bad = sorted(set(sched) - _SCHED_KEYS)
        if bad:
            raise SearchError(
                f"{where}.scheduler: unknown key {bad[0]!r}; expected some of: {', '.join(sorted(_SCHED_KEYS))}"
            )
        grace = sched.get("grace_period")
        rf = sched.get("reduction_factor", 2)
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 1):
            raise SearchError(f"{where}.scheduler.grace_period: expected a positive integer, got {grace!r}")
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or rf < 2:
            raise SearchError(f"{where}.scheduler.reduction_factor: expected a number >= 2, got {rf!r}")
        sched = {"type": "asha", "grace_period": grace, "reduction_factor": rf}
    return Search(
        space=space,
        num_samples=n,
        algorithm=algorithm,
        metric=str(raw.get("metric", "val_mAP")),
        mode=mode,
        seed=seed,
        scheduler=sched,
        keys=list(space),
    )


def bounds(search: Search) -> dict[str, list]:
    """Per key the values a trial can get at the edges (choice: all of them), to validate them up front."""
    out = {}
    for key, dist in search.space.items():
        kind, args = next(iter(dist.items()))
        out[key] = list(args)
    return out


def check_against_config(search: Search, config: dict, where: str) -> None:
    """The searched keys exist and every edge value passes the config's checks; ASHA's rungs fall on eval epochs.

    ``config``: the base trial's nested mapping (TrialSpec.config); the
    searched keys are dotted and applied onto it.
    """
    from oimnet.config import ConfigError, get_dotted, load_config

    base = load_config(None, config)
    for key, values in bounds(search).items():
        current = get_dotted(config, key, KeyError)
        if current is KeyError or isinstance(current, dict):
            raise SearchError(f"{where}.space.{key}: not a config key (see `python -m oimnet.train --print-config`)")
        for v in values:
            if isinstance(current, int) and not isinstance(current, bool) and isinstance(v, float):
                if next(iter(search.space[key])) != "choice":
                    raise SearchError(f"{where}.space.{key}: an integer key; use choice: [values]")
            try:
                load_config(None, {key: v}, base=base)
            except ConfigError as e:
                raise SearchError(f"{where}.space.{key}: value {v!r}: {e}") from None
    if search.scheduler:
        period = int(config["EVAL_PERIOD"])
        grace = search.scheduler.get("grace_period") or period
        epochs = int(config["SOLVER"]["MAX_EPOCHS"])
        if grace % period:
            raise SearchError(
                f"{where}.scheduler.grace_period: {grace} is not a multiple of EVAL_PERIOD={period}; "
                "ASHA would compare trials at epochs that have no validation metric"
            )
        if grace >= epochs:
            raise SearchError(
                f"{where}.scheduler.grace_period: {grace} >= SOLVER.MAX_EPOCHS={epochs}: "
                "no trial could be stopped early"
            )


def resolved_grace(search: Search, config: dict) -> int:
    """ASHA's grace period in epochs (``config``: the base trial's nested mapping)."""
    return int(search.scheduler.get("grace_period") or config["EVAL_PERIOD"])


def param_space(search: Search, base_key: str) -> dict:
    """Tune's param space: the base trial key and the sampled values under "search"."""
    from ray import tune

    make = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "choice": lambda a: tune.choice(a),
    }
    return {
        "trial": base_key,
        "search": {k: make[next(iter(d))](next(iter(d.values()))) for k, d in search.space.items()},
    }


def search_alg(search: Search, max_concurrent: int | None):
    """Tune's random sampler (seeded) or Optuna's TPE (seeded, behind a concurrency limit)."""
    if search.algorithm == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=max_concurrent or 0, random_state=search.seed)
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from tune.search_runtime import OptunaOnEvalEpochs

    alg = OptunaOnEvalEpochs(
        metric=search.metric, mode=search.mode, sampler=optuna.samplers.TPESampler(seed=search.seed)
    )
    return ConcurrencyLimiter(alg, max_concurrent=max_concurrent) if max_concurrent else alg


def scheduler(search: Search, config: dict):
    """ASHA for a search with a ``scheduler:`` section, else None (``config``: the base trial's nested mapping)."""
    if not search.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # metric and mode come from the TuneConfig (Tune refuses them in both places)
    return ASHAScheduler(
        time_attr="epoch",
        max_t=int(config["SOLVER"]["MAX_EPOCHS"]),
        grace_period=resolved_grace(search, config),
        reduction_factor=search.scheduler["reduction_factor"],
        # a trial reaching the last epoch ends by itself (test evaluation, MLflow run FINISHED)
        stop_last_trials=False,
    )


def trial_values(config: dict) -> dict[str, Any]:
    """The sampled values of a trial's Tune config (plain Python numbers/strings)."""
    out = {}
    for k, v in (config.get("search") or {}).items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def label(values: dict[str, Any]) -> str:
    """'BASE_LR=0.0123 OIM_EPS=0.171': the row label of a sampled configuration."""

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in values.items())


def mark_stopped(tracking_uri: str, parent_run_id: str, trial_name: str, epoch: int) -> str | None:
    """End the MLflow child run of a trial ASHA stopped: FINISHED, tag stopped_early=<epoch>. Its id or None.

    FINISHED is forced: Ray stops the trial's process abruptly, and the
    trainer may have marked its own run KILLED on the way out.
    """
    from oimnet.engine.tracking import get_client

    client = get_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.trial = '{trial_name}'",
        order_by=["attributes.start_time DESC"],
    )
    for r in runs:  # the latest attempt of the trial
        client.set_tag(r.info.run_id, STOPPED_TAG, str(int(epoch)))
        if r.info.status != "FINISHED":
            client.set_terminated(r.info.run_id, "FINISHED")
        return r.info.run_id
    return None


def close_stopped_runs(tracking_uri: str, parent_run_id: str) -> int:
    """After fit(): the child runs of trials Tune stopped end FINISHED. Returns how many were changed.

    Two kinds: runs tagged stopped_early (ASHA stopped them at a rung; the trial's process may have
    marked the run KILLED after the callback tagged it), and runs that completed their work -- the
    metrics of the last epoch (``SOLVER.MAX_EPOCHS``, test ``mAP`` included) are logged -- but were
    ended KILLED: ASHA answers STOP to every result at its ``max_t``, so a trial reporting its last
    epoch may be killed before ``train_run`` closes its run. Any other unfinished run is left as it is.
    """
    from oimnet.engine.tracking import get_client

    client = get_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )
    changed = 0
    for r in runs:
        if r.info.status == "FINISHED":
            continue
        if STOPPED_TAG in r.data.tags or _logged_last_epoch(client, r):
            client.set_terminated(r.info.run_id, "FINISHED")
            changed += 1
    return changed


def _logged_last_epoch(client, run) -> bool:
    """The run logged the test ``mAP`` at step SOLVER.MAX_EPOCHS (its last epoch's evaluation)."""
    try:
        last = int(run.data.params.get("SOLVER.MAX_EPOCHS", ""))
    except ValueError:
        return False
    return any(int(m.step) == last for m in client.get_metric_history(run.info.run_id, "mAP"))
