"""The Ray Tune function trainable: one trial = one :func:`train_run`.

This module imports only the standard library, Ray and ``oimnet`` (no other
``tune.*`` module): the driver registers it with cloudpickle *by value*, so
Ray workers (local or on a cluster) need ``oimnet`` installed but not this
checkout's ``tune/`` folder on their path.

Fault tolerance: each epoch's checkpoint file (``OUTPUT_DIR/epoch_XXX.pth``)
is reported with ``tune.Checkpoint``. When ``FailureConfig`` restarts a failed
trial, ``tune.get_checkpoint()`` gives it back; it is copied into OUTPUT_DIR
and the run continues with ``train_run(resume=True)`` (same MLflow child run).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_CKPT = re.compile(r"^epoch_(\d+)\.pth$")
KEEP_CHECKPOINTS = 2  # epoch files kept in a trial's OUTPUT_DIR (paper-size ones are ~300 MB)


def _scalars(metrics: dict) -> dict:
    """Only finite-able numbers go to Tune (it rejects nested values)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _restore_checkpoint(output_dir: Path) -> str | None:
    """Copy the trial's last Tune checkpoint into OUTPUT_DIR; its file name or None."""
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        files = sorted(p for p in Path(d).iterdir() if _CKPT.match(p.name))
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
        for p in output_dir.iterdir():
            m = _CKPT.match(p.name)
            if m and int(m.group(1)) > int(_CKPT.match(src.name).group(1)):
                p.unlink()
        return src.name


def _prune(output_dir: Path, keep: int) -> None:
    files = sorted((int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CKPT.match(p.name)))
    for _, p in files[:-keep]:
        p.unlink(missing_ok=True)


def _close_stale_run(output_dir: Path, tracking_uri: str) -> None:
    """A previous attempt killed before its first checkpoint (e.g. the sweep was
    interrupted) leaves its MLflow run RUNNING; this attempt starts a new run,
    so mark the old one KILLED."""
    id_file = output_dir / "mlflow_run_id"
    if not id_file.is_file():
        return
    from oimnet.engine.tracking import get_client

    try:
        client = get_client(tracking_uri)
        run_id = id_file.read_text().strip()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
    except Exception as e:  # never block a retry on bookkeeping
        print(f"[tune] could not close stale MLflow run in {id_file}: {e}", flush=True)


def _limit_threads() -> None:
    """One torch thread per CPU the trial was given: trials share the machine, and
    oversubscribed OpenMP threads spin-wait (several times slower on 2 cores)."""
    import ray
    import torch

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    torch.set_num_threads(max(1, int(cpus)))


def run_trial(config: dict, specs: dict, tracking_uri: str, parent_run_id: str | None, env: dict | None = None) -> None:
    """Ray Tune entry point.

    Args:
        config: Tune's param space sample, ``{"trial": <TrialSpec key>}``.
        specs: key -> TrialSpec as a dict (``config`` holds the full flat config
            with absolute paths, ``tags`` the MLflow child tags).
        tracking_uri: absolute MLflow URI (a trial's cwd is its own folder).
        parent_run_id: the sweep's MLflow parent run.
        env: environment variables to set in the worker before training
            (grid/CLI ``--trial-env``; Ray on a remote cluster does not
            forward the driver's environment).
    """
    from ray import tune

    from oimnet.config import load_config
    from oimnet.engine.trainer import train_run

    spec = specs[config["trial"]]
    _limit_threads()
    os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
    cfg = load_config(None, spec["config"])
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    restored = _restore_checkpoint(out)
    if restored:
        print(f"[tune] trial {spec['key']}: restored {restored} from Tune's checkpoint", flush=True)
    elif not any(_CKPT.match(p.name) for p in out.iterdir()):
        _close_stale_run(out, tracking_uri)

    reported = []

    def on_epoch(epoch: int, metrics: dict, checkpoint_path: str | None) -> None:
        reported.append(epoch)
        values = _scalars(metrics)
        if not checkpoint_path:
            tune.report(values)
            return
        src = Path(checkpoint_path)
        with tempfile.TemporaryDirectory(prefix="oimnet-ckpt-") as d:
            dst = Path(d) / src.name
            try:
                os.link(src, dst)
            except OSError:  # another file system
                shutil.copyfile(src, dst)
            # report() persists the directory to the run's storage before returning.
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(d))
        _prune(out, KEEP_CHECKPOINTS)

    final = train_run(
        cfg,
        resume=True,
        epoch_callback=on_epoch,
        mlflow_parent_run_id=parent_run_id,
        mlflow_tags=spec["tags"],
        tracking_uri=tracking_uri,
    )
    if not reported:
        # Restored after its last epoch (stopped while finishing up): nothing
        # was trained in this attempt, so tell Tune the final state once.
        tune.report({**_scalars(final), "epoch": float(cfg.SOLVER.MAX_EPOCHS)})
