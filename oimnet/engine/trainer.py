"""One training run = one process = one device: build the trainer, register hooks, run.

LUT, circular queue and ProtoNorm statistics live in this process, so a run
is never split over several GPUs; sweeps run many of these (see tune/).

:func:`train_run` is the entry point of ``python -m oimnet.train`` and of
every Tune trial. Extra hooks (a Tune reporter, a test's failure injection)
come in through ``hooks`` and run after the default ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from omegaconf import DictConfig

from oimnet.checkpoint import find_last_checkpoint
from oimnet.config import to_yaml
from oimnet.engine import seeding
from oimnet.engine.device import select_device
from oimnet.engine.hooks import CheckpointHook, EvalHook, HookBase, LRScheduleHook, TrainStatsHook
from oimnet.engine.loop import Trainer
from oimnet.engine.lr_schedule import build_scheduler
from oimnet.engine.run_setup import check_lut_size, install_sigterm, prepare_config, setup_logging
from oimnet.engine.step import SingleDeviceStep, loss_weights

log = logging.getLogger("oimnet")


def build_optimizer(model, cfg) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    s = cfg.SOLVER
    return torch.optim.SGD(
        params, lr=float(s.BASE_LR), momentum=float(s.SGD_MOMENTUM), weight_decay=float(s.WEIGHT_DECAY)
    )


def load_resume_state(out: Path) -> dict | None:
    """The last checkpoint in ``out`` (weights_only load), or None when there is none."""
    last = find_last_checkpoint(out)
    if last is None:
        log.info("--resume: no checkpoint in %s, starting from scratch", out)
        return None
    log.info("resuming from %s", last)
    return torch.load(last, map_location="cpu", weights_only=True)


def build_trainer(cfg: DictConfig, state: dict | None) -> Trainer:
    """Model, data, optimizer, schedule and step strategy of a prepared config; resumed from ``state``."""
    from oimnet.data import build_train_loader
    from oimnet.models import build_model

    seed = int(state["seed"]) if state else seeding.resolve_seed(int(cfg.SEED))
    device = select_device(cfg)
    amp = bool(cfg.SOLVER.AMP) and device.type == "cuda"
    seeding.seed_everything(seed)
    model = build_model(cfg).to(device)
    loader = build_train_loader(cfg, seed=seed)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(loader))
    strategy = SingleDeviceStep(
        model, optimizer, device, loss_weights(cfg.SOLVER), float(cfg.SOLVER.CLIP_GRADIENTS), amp
    )
    trainer = Trainer(
        cfg, model, optimizer, scheduler, loader, strategy, device=device, out_dir=cfg.OUTPUT_DIR, seed=seed
    )
    if state is not None:
        trainer.resume_from(state)
    return trainer


def default_hooks(cfg: DictConfig, *, track: bool, tracking_uri, parent_run_id, tags, close_stale) -> list[HookBase]:
    """LR schedule, loss statistics, checkpoints, evaluation, and MLflow when ``track``.

    Order matters: statistics and evaluation fill ``trainer.epoch_metrics``
    before the MLflow hook logs them.
    """
    hooks: list[HookBase] = [
        LRScheduleHook(),
        TrainStatsHook(int(cfg.DISP_PERIOD)),
        CheckpointHook(int(cfg.CKPT_PERIOD)),
        EvalHook(int(cfg.EVAL_PERIOD), use_gt_at_end=True),
    ]
    if track:
        from oimnet.engine.mlflow_hook import MLflowHook

        hooks.append(MLflowHook(tracking_uri, parent_run_id, tags, close_stale=close_stale))
    return hooks


def train_run(
    cfg: DictConfig,
    *,
    resume: bool = False,
    hooks: Iterable[HookBase] = (),
    mlflow_parent_run_id: str | None = None,
    mlflow_tags: dict | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    close_stale_run: bool = False,
) -> dict:
    """Train (and evaluate) one configuration; returns the final metrics.

    With ``resume`` the last checkpoint in OUTPUT_DIR (if any) is continued and
    so is its MLflow run. The MLflow run ends FINISHED, FAILED (exception) or
    KILLED (Ctrl-C / SIGTERM), never RUNNING. ``track=False``: no MLflow (it
    need not be installed). ``hooks`` run after the default hooks.
    """
    cfg = prepare_config(cfg)
    out = Path(cfg.OUTPUT_DIR)
    handler = setup_logging(out)
    restore_sigterm = install_sigterm()
    try:
        check_lut_size(cfg)
        (out / "config.yaml").write_text(to_yaml(cfg))
        trainer = build_trainer(cfg, load_resume_state(out) if resume else None)
        trainer.register_hooks(
            default_hooks(
                cfg,
                track=track,
                tracking_uri=tracking_uri,
                parent_run_id=mlflow_parent_run_id,
                tags=mlflow_tags,
                close_stale=close_stale_run,
            )
        )
        trainer.register_hooks(hooks)
        t_start = time.time()
        metrics = trainer.train()
        log.info("training done in %.1f s; final metrics %s", time.time() - t_start, metrics)
        return metrics
    finally:
        log.removeHandler(handler)
        handler.close()
        restore_sigterm()
