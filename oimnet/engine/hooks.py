"""Hooks: everything around the training loop that is not the loop itself.

A hook subclasses :class:`HookBase` and overrides the stages it needs. The
:class:`~oimnet.engine.loop.Trainer` calls, in registration order::

    before_train
    for each epoch:   before_epoch
        for each step:    before_step   (trainer.step_output is the previous step's)
                          -- the step strategy runs: forward, backward, optimizer --
                          after_step    (trainer.step_output, trainer.global_step updated)
                      after_epoch       (trainer.epoch_metrics filled by earlier hooks)
    after_train       (always, also after an exception)
    on_exception(e)   (before after_train, when the loop raised e)

A hook reaches everything through ``self.trainer`` (set on registration):
model, optimizer, scheduler, cfg, out_dir, epoch, global_step, metrics, and
``rank`` / ``is_main`` (only the main process, rank 0, writes files and
tracking records; a run has SOLVER.WORLD_SIZE processes).

This module holds the hooks every run has (LR schedule, train-loss
statistics, checkpoints, evaluation). The MLflow hook lives in
:mod:`oimnet.engine.mlflow_hook` (the only engine module importing MLflow),
the Ray Tune hook in ``tune/trainable.py``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from oimnet.checkpoint import checkpoint_path, save_atomic
from oimnet.constants import HEADLINE_METRICS

if TYPE_CHECKING:
    from oimnet.engine.loop import Trainer

log = logging.getLogger("oimnet")


class HookBase:
    """A no-op at every stage; subclasses override what they need."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def on_exception(self, exc: BaseException) -> None:
        """The loop raised ``exc`` (it is re-raised after every hook has seen it)."""


class LRScheduleHook(HookBase):
    """Steps the per-iteration LR scheduler after every optimizer step."""

    def after_step(self) -> None:
        self.trainer.scheduler.step()


class TrainStatsHook(HookBase):
    """Loss statistics of the training steps.

    - every ``period`` steps: the mean of each loss term over the window, plus
      ``lr``, in ``trainer.step_metrics`` (None at other steps) and the log;
    - after each epoch: ``train_<term>`` means over the epoch and
      ``epoch_time_s`` (training time only) in ``trainer.epoch_metrics``.
    """

    def __init__(self, period: int):
        self.period = max(1, int(period))

    def before_epoch(self) -> None:
        self._sums: dict[str, float] = {}
        self._window: dict[str, list[float]] = {}
        self._n = 0
        self._t0 = time.time()

    def after_step(self) -> None:
        t = self.trainer
        t.step_metrics = None
        self._n += 1
        for k, v in t.step_output.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._window.setdefault(k, []).append(v)
        if t.global_step % self.period == 0:
            avg = {k: float(np.mean(v)) for k, v in self._window.items()}
            avg["lr"] = t.lr
            t.step_metrics = avg
            log.info(
                "step %d epoch %d: %s", t.global_step, t.epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in avg.items())
            )
            self._window = {}

    def after_epoch(self) -> None:
        t = self.trainer
        if t.replaying:  # the epoch's statistics come from its checkpoint
            return
        t.epoch_metrics.update({f"train_{k}": v / max(self._n, 1) for k, v in self._sums.items()})
        t.epoch_metrics["epoch_time_s"] = time.time() - self._t0


class CpuTimeHook(HookBase):
    """After each epoch (registered after evaluation): ``cpu_time_s`` in ``trainer.epoch_metrics``,
    the CPU seconds (all threads of this process) since this attempt of the run started, training
    and evaluation included. Unlike wall time it hardly moves when other jobs share the machine."""

    def before_train(self) -> None:
        self._t0 = time.process_time()

    def after_epoch(self) -> None:
        self.trainer.epoch_metrics["cpu_time_s"] = time.process_time() - self._t0


class CheckpointHook(HookBase):
    """Every ``period`` epochs and after the last: ``OUTPUT_DIR/epoch_XXX.pth``
    (atomic write, main process only); its path in ``trainer.epoch_checkpoint``.
    The checkpoint holds the epoch's training statistics (``epoch_metrics``), so
    a run killed before the epoch's evaluation and logging can redo them."""

    def __init__(self, period: int):
        self.period = int(period)

    def after_epoch(self) -> None:
        t = self.trainer
        if t.replaying:  # the resumed checkpoint is this epoch's
            return
        t.epoch_checkpoint = None
        done = t.epoch + 1
        if not t.is_main or not (done % self.period == 0 or done == t.max_epochs):
            return
        t.checkpoint_extras["epoch_metrics"] = dict(t.epoch_metrics)
        t.epoch_checkpoint = save_atomic(t.checkpoint_state(), checkpoint_path(t.out_dir, done))
        log.info("checkpoint %s", t.epoch_checkpoint)


class ReplicaCheckHook(HookBase):
    """Before each checkpoint of a multi-rank run: every rank must hold the same OIM memory and norm statistics.

    A SHA-256 digest of the LUT, queue, queue head and every running
    mean/var is compared across the ranks (a collective: all ranks run
    this hook, registered before :class:`CheckpointHook`); a mismatch raises
    RuntimeError instead of checkpointing one rank's drifted copy.
    """

    def __init__(self, period: int):
        self.period = int(period)

    def after_epoch(self) -> None:
        from oimnet.distributed import assert_same_across_ranks

        t = self.trainer
        done = t.epoch + 1
        if t.world_size < 2 or not (done % self.period == 0 or done == t.max_epochs):
            return
        state = [
            buf
            for name, buf in t.model.named_buffers()
            if name.endswith(("running_mean", "running_var", "reid_loss.lut", "reid_loss.cq", "reid_loss.cq_head"))
        ]
        assert_same_across_ranks(state, f"epoch {done}: OIM memory and norm running statistics")


class EpochDoneHook(HookBase):
    """Registered after evaluation and MLflow: once the epoch's work is done,
    ``epoch_XXX.done`` beside its checkpoint. ``--resume`` from a checkpoint
    without one redoes the epoch's evaluation and logging first (a run killed
    during its final evaluation, or between the checkpoint and the logging)."""

    def after_epoch(self) -> None:
        from oimnet.engine.resume import done_marker

        t = self.trainer
        if t.is_main and t.epoch_checkpoint is not None:
            done_marker(t.epoch_checkpoint).write_text(f"{t.epoch + 1}\n")


class EvalHook(HookBase):
    """Every ``period`` epochs and after the last: evaluate on the test split (sharded over the ranks).

    The scalar metrics go to ``trainer.metrics`` (the run's latest result,
    returned by ``train_run``) and ``trainer.epoch_metrics``. With
    ``use_gt_at_end`` the last epoch is also evaluated with the ground-truth
    boxes, adding ``mAP_gt`` and ``top1_gt``.
    """

    def __init__(self, period: int, use_gt_at_end: bool = False):
        self.period = int(period)
        self.use_gt_at_end = bool(use_gt_at_end)

    def after_epoch(self) -> None:
        from oimnet.engine.evaluation import evaluate_model, scalar_metrics

        t = self.trainer
        done = t.epoch + 1
        last = done == t.max_epochs
        if not (done % self.period == 0 or last):
            return
        # Every rank of a multi-worker run infers its shard of the images; rank 0 alone gets the result.
        result = evaluate_model(t.model, t.cfg, t.device, t.out_dir, tag=f"epoch{done:03d}")
        gt = None
        if last and self.use_gt_at_end:
            gt = evaluate_model(t.model, t.cfg, t.device, t.out_dir, tag=f"epoch{done:03d}_gt", use_gt=True)
        if not t.is_main:
            return
        metrics = scalar_metrics(result)
        if gt is not None:
            metrics.update({f"{k}_gt": v for k, v in scalar_metrics(gt).items() if k in HEADLINE_METRICS})
        t.metrics = metrics
        t.epoch_metrics.update(metrics)
