"""The Ray Tune function trainable: one trial = one :func:`train_run` with a Tune hook.

This module imports only the standard library, Ray and ``oimnet`` (no other
``tune.*`` module): the driver registers it with cloudpickle *by value*, so
Ray workers (local or on a cluster) need ``oimnet`` installed but not this
checkout's ``tune/`` folder on their path.

Fault tolerance: :class:`TuneReportHook` reports every epoch's metrics and,
when the epoch wrote one, its checkpoint (``tune.Checkpoint``). When
``FailureConfig`` restarts a failed trial, ``tune.get_checkpoint()`` gives it
back; it is copied into OUTPUT_DIR and the run continues with
``train_run(resume=True)`` (same MLflow child run).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

from oimnet.checkpoint import checkpoint_epoch, list_checkpoints, prune_checkpoints, remove_checkpoints_after
from oimnet.engine.hooks import HookBase

KEEP_CHECKPOINTS = 2  # epoch files kept in a trial's OUTPUT_DIR (paper-size ones are ~300 MB)


def tune_scalars(metrics: dict) -> dict:
    """Only numbers go to Tune (it rejects nested values)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


class TuneReportHook(HookBase):
    """After each epoch: ``tune.report`` of {"epoch", epoch metrics}, with the
    epoch's checkpoint when one was written; then old checkpoints are pruned."""

    def __init__(self, keep: int = KEEP_CHECKPOINTS):
        self.keep = keep
        self.reported: list[int] = []

    def after_epoch(self) -> None:
        from ray import tune

        t = self.trainer
        if not t.is_main:
            return
        done = t.epoch + 1
        self.reported.append(done)
        values = tune_scalars({"epoch": done, **t.epoch_metrics})
        if t.epoch_checkpoint is None:
            tune.report(values)
            return
        src = Path(t.epoch_checkpoint)
        with tempfile.TemporaryDirectory(prefix="oimnet-ckpt-") as d:
            dst = Path(d) / src.name
            try:
                os.link(src, dst)
            except OSError:  # another file system
                shutil.copyfile(src, dst)
            # report() persists the directory to the run's storage before returning.
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(d))
        prune_checkpoints(t.out_dir, self.keep)


def restore_checkpoint(output_dir: Path) -> str | None:
    """Copy the trial's last Tune checkpoint into OUTPUT_DIR; its file name or None."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        files = list_checkpoints(d)
        if not files:
            return None
        src = files[-1]
        dst = output_dir / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            tmp = output_dir / f".{src.name}.restore-{os.getpid()}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        # A later epoch file left by the crashed attempt would be resumed
        # instead of the reported one; Tune's view is the one to trust.
        remove_checkpoints_after(output_dir, checkpoint_epoch(src))
        return src.name


def _finished_run_metrics(output_dir: Path, tracking_uri: str, max_epochs: int) -> dict | None:
    """The last metrics of this trial's MLflow run if it already ended
    FINISHED after all ``max_epochs`` epochs, else None. A driver killed just
    after a trial ended may not have saved that in Tune's state, and --resume
    would start the trial again (from an older Tune checkpoint)."""
    id_file = output_dir / "mlflow_run_id"
    if not id_file.is_file():
        return None
    from oimnet.engine.tracking import get_client

    try:
        client = get_client(tracking_uri)
        run = client.get_run(id_file.read_text().strip())
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch_time_s")]
    except Exception:  # an unreadable id or store: train as usual
        return None
    if run.info.status != "FINISHED" or not steps or max(steps) < max_epochs:
        return None
    return dict(run.data.metrics)


def apply_trial_env(env: dict | None) -> None:
    """Set the sweep's ``--trial-env`` variables (sweep.json ``env``) in this trial's process."""
    os.environ.update({str(k): str(v) for k, v in (env or {}).items()})


def limit_threads() -> None:
    """One torch thread per CPU the trial was given: trials share the machine, and
    oversubscribed OpenMP threads spin-wait (several times slower on 2 cores)."""
    import ray
    import torch

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    torch.set_num_threads(max(1, int(cpus)))


def searched_spec(spec: dict, values: dict, trial_name: str) -> dict:
    """A searched grid's trial: the base spec with the sampled values, its own folder and MLflow labels.

    The row label is the sampled values (``BASE_LR=0.0123 OIM_EPS=0.171``) and
    the paper label is empty: a sampled configuration is not a paper method.
    """
    from oimnet.config import set_dotted

    values = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
    label = " ".join(
        f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in values.items()
    )
    cfg = copy.deepcopy(spec["config"])  # the nested mapping; the sampled keys are dotted
    for key, value in values.items():
        set_dotted(cfg, key, value)
    cfg["OUTPUT_DIR"] = str(Path(cfg["OUTPUT_DIR"]).parent / trial_name)
    set_dotted(cfg, "MLFLOW.RUN_NAME", f"{label} s{spec['seed']}")
    tags = {**spec["tags"], "row": label, "paper_label": "", "trial": trial_name, "search_base": spec["row"]}
    return {**spec, "key": trial_name, "row": label, "paper_label": "", "config": cfg, "tags": tags}


def run_trial(
    config: dict,
    specs: dict,
    tracking_uri: str,
    parent_run_id: str | None,
    env: dict | None = None,
    hook_factories: tuple = (),
    worker_resources: dict | None = None,
) -> None:
    """Ray Tune entry point.

    Args:
        config: Tune's param space sample, ``{"trial": <TrialSpec key>}``, plus
            ``"search": {config key: sampled value}`` in a searched grid.
        specs: key -> TrialSpec as a dict (``config`` holds the full config as
            a nested mapping with absolute paths, ``tags`` the MLflow child tags).
        tracking_uri: absolute MLflow URI (a trial's cwd is its own folder).
        parent_run_id: the sweep's MLflow parent run.
        env: environment variables to set in the worker before training
            (grid/CLI ``--trial-env``; Ray on a remote cluster does not
            forward the driver's environment).
        hook_factories: callables returning a HookBase, each called once per
            attempt; their hooks run after the Tune hook (e.g. a test's
            failure injection, given by the program that starts the sweep).
        worker_resources: what one Ray Train worker asks for when the trial's
            SOLVER.WORLD_SIZE is above 1 (its "cpu" count; a GPU each on a
            GPU cluster).
    """
    from ray import tune

    from oimnet.config import load_config
    from oimnet.engine.trainer import train_run

    spec = specs[config["trial"]]
    if config.get("search"):
        spec = searched_spec(spec, config["search"], tune.get_context().get_trial_name())
    limit_threads()
    apply_trial_env(env)
    cfg = load_config(None, spec["config"])
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    finished = _finished_run_metrics(out, tracking_uri, int(cfg.SOLVER.MAX_EPOCHS))
    if finished is not None:
        print(f"[tune] trial {spec['key']}: its MLflow run already finished all epochs; not retrained", flush=True)
        tune.report({**tune_scalars(finished), "epoch": float(cfg.SOLVER.MAX_EPOCHS)})
        return
    restored = restore_checkpoint(out)
    if restored:
        print(f"[tune] trial {spec['key']}: restored {restored} from Tune's checkpoint", flush=True)
    if int(cfg.SOLVER.WORLD_SIZE) > 1:
        _run_on_workers(cfg, spec, tracking_uri, parent_run_id, env, hook_factories, worker_resources or {})
        return
    reporter = TuneReportHook()
    final = train_run(
        cfg,
        resume=True,
        hooks=[reporter, *(make() for make in hook_factories)],
        mlflow_parent_run_id=parent_run_id,
        mlflow_tags=spec["tags"],
        tracking_uri=tracking_uri,
        close_stale_run=not list_checkpoints(out),
    )
    if not reporter.reported:
        # Restored after its last epoch (stopped while finishing up): nothing
        # was trained in this attempt, so tell Tune the final state once.
        tune.report({**tune_scalars(final), "epoch": float(cfg.SOLVER.MAX_EPOCHS)})


def _run_on_workers(cfg, spec, tracking_uri, parent_run_id, env, hook_factories, worker_resources) -> None:
    """The trial as the driver of SOLVER.WORLD_SIZE Ray Train workers; Ray's TuneReportCallback forwards rank 0's reports."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from oimnet.engine.workers import train_on_workers

    out = Path(cfg.OUTPUT_DIR)
    train_on_workers(
        cfg,
        resume=True,
        tracking_uri=tracking_uri,
        mlflow_parent_run_id=parent_run_id,
        mlflow_tags=spec["tags"],
        close_stale_run=not list_checkpoints(out),
        hook_factories=hook_factories,
        callbacks=[TuneReportCallback()],
        cpus_per_worker=float(worker_resources.get("cpu", 1)),
        env=env,
    )
