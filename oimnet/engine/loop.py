"""The training loop: epochs of steps, with hooks around each (see :mod:`oimnet.engine.hooks`).

The loop owns only the iteration, the step counter and the per-epoch
reseeding that makes a resumed run draw what the uninterrupted run drew. The
step itself is the strategy's (:mod:`oimnet.engine.step`); checkpoints,
evaluation, LR schedule, tracking and Tune reports are hooks.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from oimnet.engine import seeding
from oimnet.engine.hooks import HookBase

log = logging.getLogger("oimnet")


class Trainer:
    """State shared with the hooks, and the loop.

    Attributes hooks read or write:
        cfg, model, optimizer, scheduler, loader, strategy, device, out_dir, seed
        rank, world_size, is_main: this process's place (rank 0 is the main one)
        epoch: 0-based index of the current epoch; max_epochs
        global_step: optimizer steps done so far (1-based number of the last one)
        step_output: {loss term: float, "loss": total} of the last step
        step_metrics: window means at a logging step (TrainStatsHook), else None
        epoch_metrics: what the hooks measured in the current epoch
        epoch_checkpoint: the checkpoint written this epoch (CheckpointHook), else None
        metrics: the latest evaluation's scalar metrics (what ``train_run`` returns)
        checkpoint_extras: extra entries hooks put into every checkpoint
        resumed_from: the checkpoint dict this run continues, or None (resumed_path: its file)
        replaying: True while the after_epoch hooks redo the work of the resumed
            checkpoint's epoch that the killed attempt had not done (see train)
    """

    def __init__(
        self, cfg, model, optimizer, scheduler, loader, strategy, *, device, out_dir, seed, rank=0, world_size=1
    ):
        self.cfg, self.model, self.optimizer, self.scheduler = cfg, model, optimizer, scheduler
        self.loader, self.strategy, self.device = loader, strategy, device
        self.out_dir, self.seed = Path(out_dir), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.max_epochs = int(cfg.SOLVER.MAX_EPOCHS)
        self.start_epoch, self.epoch, self.global_step = 0, 0, 0
        self.step_output: dict[str, float] = {}
        self.step_metrics: dict[str, float] | None = None
        self.epoch_metrics: dict[str, float] = {}
        self.epoch_checkpoint: Path | None = None
        self.metrics: dict[str, float] = {}
        self.checkpoint_extras: dict = {}
        self.resumed_from: dict | None = None
        self.resumed_path: Path | None = None
        self.replaying = False
        self._hooks: list[HookBase] = []

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def hooks(self) -> tuple[HookBase, ...]:
        return tuple(self._hooks)

    def register_hooks(self, hooks) -> None:
        """Append hooks (called in this order at every stage); None entries are skipped."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"hook {h!r}: expected an oimnet.engine.hooks.HookBase")
            h.trainer = self
            self._hooks.append(h)

    # -- checkpoint state -------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        """What a checkpoint holds (see :mod:`oimnet.checkpoint.files` for the layout)."""
        from oimnet.config import to_yaml

        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch + 1,
            "scaler": self.strategy.state_dict(),
            "config": to_yaml(self.cfg),
            "global_step": self.global_step,
            "seed": self.seed,
            "metrics": self.metrics,
            **self.checkpoint_extras,
        }

    def resume_from(self, state: dict, path=None) -> None:
        """Continue after the epoch a checkpoint (a dict from :meth:`checkpoint_state`, read from path) ends."""
        self.resumed_path = Path(path) if path else None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.strategy.load_state_dict(state.get("scaler"))
        self.start_epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.metrics = dict(state.get("metrics", {}))
        self.resumed_from = state

    # -- the loop ---------------------------------------------------------------------

    def train(self) -> dict[str, float]:
        """Run epochs start_epoch..max_epochs-1; returns ``self.metrics``."""
        try:
            self._call("before_train")
            self._finish_resumed_epoch()
            for epoch in range(self.start_epoch, self.max_epochs):
                self.epoch = epoch
                self.run_epoch()
            return self.metrics
        except BaseException as e:
            for h in self._hooks:
                h.on_exception(e)
            raise
        finally:
            self._call("after_train")

    def _finish_resumed_epoch(self) -> None:
        """The resumed checkpoint was saved but its epoch's evaluation and logging
        never ended (no ``.done`` marker: killed in between): run the epoch's
        after_epoch hooks again, with its training statistics from the checkpoint
        (the statistics and checkpoint hooks skip while ``replaying``)."""
        from oimnet.engine.resume import done_marker

        state, path = self.resumed_from, self.resumed_path
        if state is None or path is None or "epoch_metrics" not in state or done_marker(path).exists():
            return
        log.info("%s: its epoch's evaluation and logging did not finish; doing them now", path.name)
        self.epoch = self.start_epoch - 1
        self.epoch_metrics, self.epoch_checkpoint = dict(state["epoch_metrics"]), path
        self.replaying = True
        try:
            self._call("after_epoch")
        finally:
            self.replaying = False

    def run_epoch(self) -> None:
        from tqdm import tqdm

        seeding.seed_everything(seeding.epoch_seed(self.seed, self.epoch))
        if hasattr(self.loader.batch_sampler, "set_epoch"):
            self.loader.batch_sampler.set_epoch(self.epoch)  # shuffle order and flips drawn from (seed, epoch)
        self.model.train()
        self.epoch_metrics, self.epoch_checkpoint = {}, None
        self._call("before_epoch")
        interactive = sys.stderr.isatty()
        bar = tqdm(
            self.loader,
            desc=f"epoch {self.epoch + 1}/{self.max_epochs}",
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0 if interactive else 30.0,
            file=sys.stderr,
            disable=not self.is_main,
        )
        for batch in bar:
            self._call("before_step")
            self.step_output = self.strategy.run_step(batch, step=self.global_step + 1, epoch=self.epoch + 1)
            self.global_step += 1
            self._call("after_step")
            out = self.step_output
            # refresh=False: drawn at the bar's own interval, with its step count (an eager
            # refresh every step printed a stale 0/N and flooded non-interactive logs)
            postfix = {
                "loss": f"{out['loss']:.3f}",
                "reid": f"{out.get('loss_box_reid', 0):.3f}",
                "lr": f"{self.lr:.2e}",
            }
            bar.set_postfix(postfix, refresh=False)
        bar.close()
        self._call("after_epoch")

    def _call(self, stage: str) -> None:
        for h in self._hooks:
            getattr(h, stage)()
