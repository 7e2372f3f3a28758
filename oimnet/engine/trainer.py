"""One training run: build the trainer, register hooks, run.

A run is one process on one device, or SOLVER.WORLD_SIZE processes (Ray
Train workers, one device each) that together train like one process on
the concatenated batch: LUT, queue and ProtoNorm/BatchNorm statistics are
synchronised (see oimnet.distributed), rank 0 alone writes files and
tracking records.  Sweeps run many of these (see tune/).

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

from oimnet.config import to_yaml
from oimnet.distributed import is_main_process
from oimnet.engine import seeding
from oimnet.engine.device import select_device
from oimnet.engine.hooks import (
    CheckpointHook,
    CpuTimeHook,
    EpochDoneHook,
    EvalHook,
    HookBase,
    LRScheduleHook,
    ReplicaCheckHook,
    TrainStatsHook,
)
from oimnet.engine.loop import Trainer
from oimnet.engine.lr_schedule import build_scheduler
from oimnet.engine.run_setup import check_lut_size, install_sigterm, prepare_config, setup_logging
from oimnet.engine.step import DataParallelStep, SingleDeviceStep, loss_weights

log = logging.getLogger("oimnet")


def build_optimizer(model, cfg) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    s = cfg.SOLVER
    return torch.optim.SGD(
        params, lr=float(s.BASE_LR), momentum=float(s.SGD_MOMENTUM), weight_decay=float(s.WEIGHT_DECAY)
    )


def load_resume_state(out: Path, cfg: DictConfig | None = None) -> tuple[Path, dict] | None:
    """(path, state) of the newest intact checkpoint in ``out`` (weights_only
    load; see oimnet.engine.resume), or None when there is none. Stale
    temporary files are removed first; with ``cfg``, a checkpoint trained
    under other settings raises ConfigMismatchError listing the keys."""
    from oimnet.checkpoint_config import check_resume_config
    from oimnet.engine.resume import load_intact_checkpoint, remove_stale_temp_files

    remove_stale_temp_files(out)
    found = load_intact_checkpoint(out)
    if found is None:
        log.info("--resume: no checkpoint in %s, starting from scratch", out)
        return None
    path, state = found
    if cfg is not None:
        check_resume_config(cfg, state, path)
    log.info("resuming from %s", path)
    return path, state


def build_trainer(
    cfg: DictConfig, state: dict | None, train_records: list | None = None, state_path: Path | None = None
) -> Trainer:
    """Model, data, optimizer, schedule and step strategy of a prepared config; resumed from ``state``.

    ``train_records``: the training images to use instead of the dataset's
    training split (the rest of it under a validation split).

    Under a process group of SOLVER.WORLD_SIZE ranks (Ray Train's workers)
    each rank gets its share of every global batch, a DDP-wrapped model with
    synchronised norms and memory, and the :class:`DataParallelStep`; the
    trainer itself keeps the bare model (checkpoints and evaluation see the
    same state-dict keys on any world size).
    """
    from oimnet.data import build_train_loader
    from oimnet.distributed import broadcast_int, get_rank, get_world_size
    from oimnet.distributed.ddp import wrap_data_parallel
    from oimnet.models import build_model
    from oimnet.models.sampling import use_keyed_sampling

    rank, world = get_rank(), get_world_size()
    if world != int(cfg.SOLVER.WORLD_SIZE):
        raise ValueError(
            f"SOLVER.WORLD_SIZE {cfg.SOLVER.WORLD_SIZE} but this process is one of {world} "
            "(start WORLD_SIZE > 1 runs through Ray Train: oimnet.engine.workers / --workers-per-trial)"
        )
    seed = broadcast_int(int(state["seed"]) if state else seeding.resolve_seed(int(cfg.SEED)))
    device = select_device(cfg, distributed=world > 1)
    amp = bool(cfg.SOLVER.AMP) and device.type == "cuda"
    seeding.seed_everything(seed)
    model = build_model(cfg).to(device)
    keyed = bool(cfg.SOLVER.KEYED_SAMPLING) or world > 1
    if keyed:
        use_keyed_sampling(model)
    loader = build_train_loader(cfg, seed=seed, records=train_records, rank=rank, world_size=world)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(loader))
    step_args = (optimizer, device, loss_weights(cfg.SOLVER), float(cfg.SOLVER.CLIP_GRADIENTS), amp)
    if world > 1:
        strategy = DataParallelStep(wrap_data_parallel(model, device), *step_args, sampling_seed=seed)
    else:
        strategy = SingleDeviceStep(model, *step_args, sampling_seed=seed if keyed else None)
    trainer = Trainer(
        cfg,
        model,
        optimizer,
        scheduler,
        loader,
        strategy,
        device=device,
        out_dir=cfg.OUTPUT_DIR,
        seed=seed,
        rank=rank,
        world_size=world,
    )
    if state is not None:
        trainer.resume_from(state, state_path)
    return trainer


def default_hooks(
    cfg: DictConfig, *, track: bool, tracking_uri, parent_run_id, tags, close_stale, run_split=None
) -> list[HookBase]:
    """LR schedule, loss statistics, checkpoints, evaluation, and MLflow when ``track``.

    Evaluation: the test split every EVAL_PERIOD epochs; with a validation
    split (``run_split``, see :mod:`oimnet.engine.validation`) the
    validation split every EVAL_PERIOD epochs and the test split once,
    after the last; with EVAL_GT_AT_END the last epoch also on ground-truth
    boxes. Order matters: statistics and evaluation fill
    ``trainer.epoch_metrics`` before the MLflow hook logs them.
    """
    hooks: list[HookBase] = [
        LRScheduleHook(),
        TrainStatsHook(int(cfg.DISP_PERIOD)),
        ReplicaCheckHook(int(cfg.CKPT_PERIOD)) if int(cfg.SOLVER.WORLD_SIZE) > 1 else None,
        CheckpointHook(int(cfg.CKPT_PERIOD)),
    ]
    if run_split is not None:
        from oimnet.engine.validation import ValEvalHook

        hooks.append(ValEvalHook(int(cfg.EVAL_PERIOD), run_split))
        hooks.append(EvalHook(int(cfg.SOLVER.MAX_EPOCHS), use_gt_at_end=bool(cfg.EVAL_GT_AT_END)))
    else:
        hooks.append(EvalHook(int(cfg.EVAL_PERIOD), use_gt_at_end=bool(cfg.EVAL_GT_AT_END)))
    hooks.append(CpuTimeHook())  # after evaluation: the epoch's CPU seconds include it
    if track:
        from oimnet.engine.mlflow_hook import MLflowHook

        hooks.append(MLflowHook(tracking_uri, parent_run_id, tags, close_stale=close_stale))
    hooks.append(EpochDoneHook())  # last: after evaluation and logging
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
    from oimnet.engine.validation import prepare_val_split

    cfg = prepare_config(cfg)
    out = Path(cfg.OUTPUT_DIR)
    handler = setup_logging(out, to_file=is_main_process())
    restore_sigterm = install_sigterm()
    try:
        # VAL.ENABLED: train on the identities left after the hold-out, LUT sized for them
        cfg, run_split = prepare_val_split(cfg)
        if run_split is None:
            check_lut_size(cfg)
        if is_main_process():  # one writer for the run's files
            (out / "config.yaml").write_text(to_yaml(cfg))
        found = load_resume_state(out, cfg) if resume else None
        state_path, state = found if found else (None, None)
        trainer = build_trainer(cfg, state, run_split.records.train if run_split else None, state_path)
        trainer.register_hooks(
            default_hooks(
                cfg,
                track=track,
                tracking_uri=tracking_uri,
                parent_run_id=mlflow_parent_run_id,
                tags=mlflow_tags,
                # --resume without a checkpoint: a killed first attempt's run is closed, not left RUNNING
                close_stale=close_stale_run or (resume and found is None),
                run_split=run_split,
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
