"""One sweep: its folder, its MLflow parent run, its Ray Tuner.

Folder layout (``<storage>/<experiment>/``)::

    sweep.json     what the sweep is (grid, profile, dataset, seeds, MLflow
                   URI, experiment and parent run id); --resume reads it
    trials.json    every TrialSpec (its config as the nested mapping, tags)
                   exactly as launched
    outputs/<key>/ each trial's OUTPUT_DIR (checkpoints, train.log, results)
    plots/         PNGs written at the end
    <key>/         Ray Tune's per-trial results and checkpoints
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oimnet.engine.tracking import RunLogger, get_client
from tune.search import Search, param_space, scheduler, search_alg

STATE_FILE = "sweep.json"
TRIALS_FILE = "trials.json"
MAX_FAILURES = 2


class SweepError(ValueError):
    """A sweep folder that cannot be resumed as it is; the message says why."""


@dataclass
class SweepState:
    experiment: str
    exp_dir: str  # absolute
    tracking_uri: str  # absolute
    mlflow_experiment: str
    grid: str
    grid_file: str
    profile: str
    dataset: str
    seeds: list[int]
    resources: dict
    device: str
    env: dict = field(default_factory=dict)
    parent_run_id: str | None = None
    created: str = ""
    search: dict | None = None  # tune.search.Search.to_dict() of a searched grid, else None

    def save(self) -> None:
        path = Path(self.exp_dir) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, exp_dir: str | Path) -> SweepState:
        """Read sweep.json (plain JSON; SweepError when missing or malformed)."""
        path = Path(exp_dir) / STATE_FILE
        if not path.is_file():
            raise SweepError(f"{exp_dir}: not a sweep folder ({STATE_FILE} missing)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise SweepError(f"{path}: not a sweep state written by run_ablation.py ({e})") from e


def save_trials(exp_dir: str | Path, specs: dict[str, dict]) -> Path:
    path = Path(exp_dir) / TRIALS_FILE
    path.write_text(json.dumps(specs, indent=1, default=str) + "\n")
    return path


def load_trials(exp_dir: str | Path) -> dict[str, dict]:
    """trials.json: {trial key: TrialSpec dict}, each ``config`` the nested mapping.

    A sweep folder written before configs were kept nested holds
    {dotted key: value} configs; they are read as the same nested mapping.
    """
    from oimnet.config import unflatten

    path = Path(exp_dir) / TRIALS_FILE
    try:
        specs = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"{path}: cannot be read ({e})") from e
    if not isinstance(specs, dict) or not all(
        isinstance(d, dict) and isinstance(d.get("config"), dict) for d in specs.values()
    ):
        raise SweepError(f"{path}: expected {{trial key: {{..., 'config': {{...}}}}}} as run_ablation.py writes it")
    for d in specs.values():
        if any("." in k for k in d["config"]):
            d["config"] = unflatten(d["config"])
    return specs


def latest_sweep(storage: Path) -> Path | None:
    """The most recently started sweep folder under storage, or None."""
    cands = [p.parent for p in storage.glob(f"*/{STATE_FILE}")]
    return max(cands, key=lambda p: (p / STATE_FILE).stat().st_mtime) if cands else None


# ----------------------------------------------------------------- MLflow
def start_parent(state: SweepState, n_trials: int, artifacts: list[Path]) -> str:
    """Create the sweep's parent run (RUNNING) and return its id."""
    from oimnet.engine.tracking import git_commit

    run = RunLogger.start(
        state.tracking_uri,
        state.mlflow_experiment,
        run_name=state.experiment,
        tags={
            "sweep": state.experiment,
            "grid": state.grid,
            "profile": state.profile,
            "dataset": state.dataset,
            "seeds": ",".join(str(s) for s in state.seeds),
            "git_commit": git_commit(),
            "ray_experiment_dir": state.exp_dir,
            "oimnet.role": "sweep",
        },
    )
    run.log_params(
        {
            "grid_file": state.grid_file,
            "n_trials": n_trials,
            "seeds": state.seeds,
            "trial_resources": state.resources,
            "device": state.device,
        }
    )
    for a in artifacts:
        run.log_artifact(a)
    return run.run_id


def check_resume_store(state: SweepState, requested_uri: str | None) -> None:
    """--resume continues in the store the sweep was tracked in: a different
    --tracking-uri / MLFLOW_TRACKING_URI is refused (SweepError)."""
    from oimnet.engine.tracking import resolve_tracking_uri

    requested = requested_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if requested and resolve_tracking_uri(requested) != state.tracking_uri:
        how = "--tracking-uri" if requested_uri else "MLFLOW_TRACKING_URI"
        raise SweepError(
            f"--resume: sweep {state.experiment} is tracked in {state.tracking_uri}, but {how} is "
            f"{resolve_tracking_uri(requested)}; drop {how} (or point it at the sweep's store)"
        )


def reopen_parent(state: SweepState, n_trials: int, artifacts: list[Path]) -> None:
    """--resume: the same parent run goes back to RUNNING. A sweep folder
    without one (left by a driver that died while creating it) gets a new
    parent run, saved in sweep.json. A parent id the store does not have
    raises SweepError naming both."""
    client = get_client(state.tracking_uri)
    if not state.parent_run_id:
        state.parent_run_id = start_parent(state, n_trials, artifacts)
        state.save()
        print(f"sweep {state.experiment} had no MLflow parent run: created {state.parent_run_id}")
        return
    try:
        client.get_run(state.parent_run_id)
    except Exception as e:  # noqa: BLE001 - mlflow's RESOURCE_DOES_NOT_EXIST
        raise SweepError(
            f"--resume: the sweep's parent run {state.parent_run_id} is not in the MLflow store "
            f"{state.tracking_uri} ({Path(state.exp_dir) / STATE_FILE}); was the store moved or "
            f"replaced?"
        ) from e
    client.update_run(state.parent_run_id, status="RUNNING")


def end_parent(state: SweepState, status: str, artifacts: list[Path] = ()) -> None:
    """FINISHED / FAILED / KILLED; never raises (it runs on the way out)."""
    if not state.parent_run_id:
        return
    client = get_client(state.tracking_uri)
    run = RunLogger(client, state.parent_run_id)
    if status != "FINISHED":
        _kill_running_children(client, state.parent_run_id)
    for a in artifacts:
        try:
            run.log_artifact(a, "summary")
        except Exception:  # pragma: no cover - artifact store unreachable
            pass
    run.end(status)


def _kill_running_children(client, parent_run_id: str) -> None:
    """Child runs still RUNNING when the sweep stops (their trial was stopped
    with the driver) become KILLED; --resume sets them RUNNING again."""
    try:
        exp = client.get_run(parent_run_id).info.experiment_id
        for child in client.search_runs(
            [exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(child.info.run_id, "KILLED")
    except Exception as e:  # noqa: BLE001 - never raise on the way out
        print(f"warning: could not mark the child runs of {parent_run_id} KILLED: {e}", file=sys.stderr)


# ----------------------------------------------------------------- Ray
def _private_group(gid: int) -> bool:
    """True when no other user is in group gid (a per-user group, as with umask 002)."""
    import getpass
    import grp
    import pwd

    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        me = getpass.getuser()
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    members |= {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
    return members <= {me}


def check_restorable(exp_dir: str | Path) -> None:
    """Refuse (SweepError) to let Ray restore a sweep folder someone else could
    have written: ``Tuner.restore`` unpickles ``tuner.pkl`` (and pickles kept in
    its JSON state files), which runs whatever code they hold.

    The folder, each .pkl/.json file in it, each trial folder and the .pkl
    files in those must be owned by the current user and writable by no one
    else: not by others, and not by a group another user is in (a per-user
    group, as a umask of 002 gives, is fine). Symbolic links there are refused.
    """
    import stat

    exp_dir = Path(exp_dir)
    uid = os.getuid()
    paths = [exp_dir]
    for p in sorted(exp_dir.iterdir()):
        if p.suffix in (".pkl", ".json") or p.is_dir():
            paths.append(p)
        if p.is_dir() and not p.is_symlink():
            paths.extend(sorted(p.glob("*.pkl")))
    for p in paths:
        st = p.lstat()
        why = None
        if stat.S_ISLNK(st.st_mode):
            why = "is a symbolic link"
        elif st.st_uid != uid:
            why = f"is owned by uid {st.st_uid}, not by you (uid {uid})"
        elif st.st_mode & stat.S_IWOTH:
            why = f"is writable by others (mode {stat.filemode(st.st_mode)})"
        elif st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid):
            why = f"is writable by group {st.st_gid}, which other users are in (mode {stat.filemode(st.st_mode)})"
        if why:
            raise SweepError(
                f"--resume: refusing to restore {exp_dir}: {p} {why}. Ray unpickles the sweep's "
                f"state, which runs code; only resume sweeps from a --storage you trust (check the "
                f"files, then chown/chmod go-w them)"
            )


def _trial_name(trial) -> str:
    return trial.config["trial"]


def build_tuner(
    state: SweepState,
    specs: dict[str, dict],
    *,
    restore: bool,
    max_concurrent: int | None,
    retry_failed: bool = False,
    hook_factories: tuple = (),
):
    """A Tuner over the trial keys (fresh, or ``Tuner.restore`` of exp_dir).

    ``hook_factories``: callables returning training hooks, passed to every
    trial (see :func:`tune.trainable.run_trial`); picklable by Ray.
    """
    import ray.cloudpickle
    from ray import tune

    from tune import trainable as trainable_module
    from tune.trial_resources import driver_resources, worker_cpus

    # Workers unpickle the trainable without importing this checkout's tune/.
    ray.cloudpickle.register_pickle_by_value(trainable_module)
    world = max(int(d["config"].get("SOLVER", {}).get("WORLD_SIZE", 1)) for d in specs.values())
    fn = tune.with_parameters(
        trainable_module.run_trial,
        specs=specs,
        tracking_uri=state.tracking_uri,
        parent_run_id=state.parent_run_id,
        env=state.env,
        hook_factories=tuple(hook_factories),
        worker_resources={"cpu": worker_cpus(state.resources, world)},
    )
    # A multi-worker trial is a Ray Train driver: its workers hold the resources.
    fn = tune.with_resources(fn, driver_resources(state.resources, world))
    exp_dir = Path(state.exp_dir)
    search = Search.from_dict(state.search)
    callbacks = []
    if search is not None:
        # The metric exists only at evaluation epochs; Tune would reject the other epochs' reports.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        base = next(iter(specs.values()))
        from tune.search_runtime import EarlyStopToMlflow

        callbacks.append(
            EarlyStopToMlflow(state.tracking_uri, state.parent_run_id, int(base["config"]["SOLVER"]["MAX_EPOCHS"]))
        )
    if restore:
        # The search algorithm, the scheduler and the callbacks come back from the experiment state.
        return tune.Tuner.restore(str(exp_dir), trainable=fn, resume_unfinished=True, resume_errored=retry_failed)
    run_config = tune.RunConfig(
        name=exp_dir.name,
        storage_path=str(exp_dir.parent),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks or None,
        verbose=1,
    )
    if search is not None:
        ((key, base),) = specs.items()
        return tune.Tuner(
            fn,
            param_space=param_space(search, key),
            tune_config=tune.TuneConfig(
                num_samples=search.num_samples,
                metric=search.metric,
                mode=search.mode,
                search_alg=search_alg(search, max_concurrent),
                scheduler=scheduler(search, base["config"]),
                max_concurrent_trials=None,  # the search algorithm carries the limit itself
                trial_name_creator=_search_trial_name,
                trial_dirname_creator=_search_trial_name,
            ),
            run_config=run_config,
        )
    return tune.Tuner(
        fn,
        param_space={"trial": tune.grid_search(list(specs))},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=max_concurrent,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
            # A finished trial's worker process runs the next one: torch, MLflow and oimnet are
            # imported once per worker, not once per trial (seconds of CPU each on a small trial).
            # Not for searches (ASHA stops trials mid-run: their process must end) nor for
            # multi-worker trials (each drives its own Ray Train workers).
            reuse_actors=world == 1,
        ),
        run_config=run_config,
    )


def _search_trial_name(trial) -> str:
    """<base key>-<Tune's trial id>: unique per sampled configuration."""
    return f"{trial.config['trial']}-{trial.trial_id}"


def search_outcome(results, specs: dict[str, dict], num_samples: int) -> dict[str, list[str]]:
    """As :func:`trial_outcome` for a searched grid (keys are trial names); a trial the scheduler
    stopped (its last result is marked done before the epoch budget) counts as finished, and
    samples never started count as unfinished."""
    out: dict[str, list[str]] = {"finished": [], "errored": [], "unfinished": []}
    epochs = int(next(iter(specs.values()))["config"]["SOLVER"]["MAX_EPOCHS"])
    n = 0
    for r in results:
        n += 1
        m = r.metrics or {}
        name = str(m.get("trial_id", n))
        try:
            name = Path(r.path).name
        except (TypeError, AttributeError):
            pass
        if r.error is not None:
            out["errored"].append(name)
        elif int(m.get("epoch", 0) or 0) >= epochs or (m.get("done") and int(m.get("epoch", 0) or 0) > 0):
            out["finished"].append(name)
        else:
            out["unfinished"].append(name)
    out["unfinished"] += [f"(sample {i + 1} not started)" for i in range(n, num_samples)]
    return out


def trial_outcome(results, specs: dict[str, dict]) -> dict[str, list[str]]:
    """{'finished': [...], 'errored': [...], 'unfinished': [...]} trial keys after fit().

    After a Ctrl-C, Ray marks the trial it stopped TERMINATED in memory (and
    RUNNING in the saved state that --resume reads), so "finished" is decided
    here: no error and the last reported epoch is the trial's SOLVER.MAX_EPOCHS.
    """
    out: dict[str, list[str]] = {"finished": [], "errored": [], "unfinished": []}
    seen = set()
    for r in results:
        key = (r.config or {}).get("trial")
        if key not in specs:
            continue
        seen.add(key)
        epochs = int(specs[key]["config"]["SOLVER"]["MAX_EPOCHS"])
        if r.error is not None:
            out["errored"].append(key)
        elif int((r.metrics or {}).get("epoch", 0) or 0) >= epochs:
            out["finished"].append(key)
        else:
            out["unfinished"].append(key)
    out["unfinished"] += [k for k in specs if k not in seen]
    return out


def sweep_status(outcome: dict[str, list[str]]) -> str:
    """MLflow end status of the parent run."""
    if outcome["unfinished"]:
        return "KILLED"
    if outcome["errored"]:
        return "FAILED"
    return "FINISHED"


def default_experiment_name(grid: str, profile: str, dataset: str) -> str:
    return f"{grid}-{profile}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
