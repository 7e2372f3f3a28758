"""One run on SOLVER.WORLD_SIZE data-parallel workers, launched by Ray Train.

A ``ray.train.torch.TorchTrainer`` starts N worker processes, sets up their
torch process group (NCCL with one GPU per worker, gloo on CPU workers) and
calls :func:`_worker_loop` on each; every worker runs :func:`train_run` of
the same config, and :func:`oimnet.engine.trainer.build_trainer` makes the
workers one synchronised run (each its share of every batch, OIM memory and
norm statistics identical on all ranks, rank 0 alone writing checkpoints,
the log file, MLflow records and Tune reports).

Inside a Ray Tune trial (``tune/trainable.py`` with ``--workers-per-trial``)
the trial function is the driver: it launches this TorchTrainer with Ray's
``TuneReportCallback``, which forwards rank 0's ``ray.train.report`` calls
to Tune (the pattern of Ray's guide "Hyperparameter Tuning with Ray Tune"
for Train V2, the default Train in ray 2.60).  A restarted trial resumes
from the checkpoints in OUTPUT_DIR (``train_run(resume=True)``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from oimnet.config import get_dotted, set_dotted, to_mapping
from oimnet.engine.hooks import HookBase

log = logging.getLogger("oimnet")


class TrainReportHook(HookBase):
    """After each epoch, on every rank: ``ray.train.report`` (Train V2 expects every worker to report).

    Rank 0 reports {"epoch", epoch metrics} and the epoch's checkpoint file
    (when one was written); the others report the epoch alone.
    """

    def after_epoch(self) -> None:
        import ray.train

        t = self.trainer
        values = {"epoch": float(t.epoch + 1)}
        if not t.is_main:
            ray.train.report(values)
            return
        for k, v in t.epoch_metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[k] = float(v)
        if t.epoch_checkpoint is None:
            ray.train.report(values)
            return
        with tempfile.TemporaryDirectory(prefix="oimnet-ckpt-") as d:
            src = Path(t.epoch_checkpoint)
            try:
                os.link(src, Path(d) / src.name)
            except OSError:
                shutil.copyfile(src, Path(d) / src.name)
            ray.train.report(values, checkpoint=ray.train.Checkpoint.from_directory(d))


def _worker_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker: the run's config, ``train_run``, then the final metrics reported."""
    import ray.train
    import torch

    from oimnet.config import load_config
    from oimnet.engine.trainer import train_run

    torch.set_num_threads(max(1, round(float(loop_config.get("cpus_per_worker", 1)))))
    os.environ.update({str(k): str(v) for k, v in (loop_config.get("env") or {}).items()})
    cfg = load_config(None, loop_config["config"])
    hooks = [make() for make in loop_config.get("hook_factories", ())]
    final = train_run(cfg, hooks=[TrainReportHook(), *hooks], **loop_config.get("run_kwargs", {}))
    # Last report = the run's final state ("epoch" = MAX_EPOCHS: a sweep counts the trial finished by it).
    ray.train.report({**{k: float(v) for k, v in final.items()}, "epoch": float(cfg.SOLVER.MAX_EPOCHS)})


def workers_config(cfg, cluster_gpus: float) -> tuple[dict, bool]:
    """(the nested mapping the workers load, whether they use GPUs) for a
    run on cfg.SOLVER.WORLD_SIZE workers of a cluster with ``cluster_gpus``.

    OUTPUT_DIR and INPUT.DATA_ROOT become absolute (workers do not share the
    caller's working directory); DEVICE becomes "cpu" (gloo) when it asks
    for CUDA but the cluster has fewer GPUs than workers.
    """
    n = int(cfg.SOLVER.WORLD_SIZE)
    config = to_mapping(cfg)
    for key in ("OUTPUT_DIR", "INPUT.DATA_ROOT"):
        set_dotted(config, key, str(Path(get_dotted(config, key)).expanduser().resolve()))
    wants_cuda = str(cfg.DEVICE).lower().startswith("cuda")
    use_gpu = wants_cuda and cluster_gpus >= n
    if wants_cuda and not use_gpu:
        log.warning(
            "DEVICE is %r but the Ray cluster has %s GPU(s) for %d workers: CPU workers (gloo)",
            cfg.DEVICE,
            cluster_gpus,
            n,
        )
        config["DEVICE"] = "cpu"
    return config, use_gpu


def train_on_workers(
    cfg,
    *,
    resume: bool = False,
    tracking_uri: str | None = None,
    track: bool = True,
    mlflow_parent_run_id: str | None = None,
    mlflow_tags: dict | None = None,
    close_stale_run: bool = False,
    hook_factories: Sequence[Callable[[], HookBase]] = (),
    callbacks: Sequence = (),
    cpus_per_worker: float = 1.0,
    env: dict | None = None,
) -> dict:
    """Train one config on cfg.SOLVER.WORLD_SIZE Ray Train workers; returns rank 0's final metrics.

    GPUs (one per worker) or CPU workers with gloo, paths made absolute: see
    :func:`workers_config`. ``callbacks``: Ray Train callbacks (a Tune trial
    passes ``TuneReportCallback()``).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    n = int(cfg.SOLVER.WORLD_SIZE)
    if n < 2:
        raise ValueError(f"SOLVER.WORLD_SIZE {n}: train_on_workers is for 2 or more workers (use train_run)")
    if track and tracking_uri is None:
        from oimnet.engine.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(None)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True)
    config, use_gpu = workers_config(cfg, ray.cluster_resources().get("GPU", 0))
    run_kwargs = {
        "resume": resume,
        "tracking_uri": tracking_uri,
        "track": track,
        "mlflow_parent_run_id": mlflow_parent_run_id,
        "mlflow_tags": mlflow_tags,
        "close_stale_run": close_stale_run,
    }
    out = Path(config["OUTPUT_DIR"])
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config,
            "run_kwargs": run_kwargs,
            "hook_factories": tuple(hook_factories),
            "cpus_per_worker": cpus_per_worker,
            "env": dict(env or {}),
        },
        scaling_config=ScalingConfig(num_workers=n, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name="ray_train", storage_path=str(out), callbacks=list(callbacks)),
    )
    return _final_metrics(trainer.fit())


def _final_metrics(result) -> dict:
    """Rank 0's last report of a Ray Train result (its numbers, without "epoch"); its error re-raised."""
    if result.error is not None:
        raise result.error
    metrics = dict(result.metrics or {})
    metrics.pop("epoch", None)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
