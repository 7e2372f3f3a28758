"""Failure injection for tests, as training hooks a test registers (never used in normal runs)."""

from __future__ import annotations

import functools

from oimnet.engine.hooks import HookBase

CRASH_MARKER = ".debug_crashed"  # in OUTPUT_DIR: the crash happened (the retry then runs through)


class CrashOnceAfterEpoch(HookBase):
    """Raise RuntimeError once, after the given epoch (1-based) was checkpointed and reported:
    a crashed run or trial. A marker file in OUTPUT_DIR keeps the retry from crashing again."""

    def __init__(self, epoch: int):
        self.epoch = int(epoch)

    @classmethod
    def factory(cls, epoch: int):
        """A picklable zero-argument callable making this hook (for ``hook_factories``)."""
        return functools.partial(cls, epoch)

    def after_epoch(self) -> None:
        t = self.trainer
        marker = t.out_dir / CRASH_MARKER
        if t.epoch + 1 == self.epoch and not marker.exists():
            marker.write_text("1")
            raise RuntimeError(f"simulated crash after epoch {self.epoch}")


class CrashBeforeStep(HookBase):
    """Raise RuntimeError before the given global step (1-based): a crash in the middle of
    an epoch, after some of its steps were logged but before its checkpoint."""

    def __init__(self, step: int):
        self.step = int(step)

    def before_step(self) -> None:
        if self.trainer.global_step + 1 == self.step:
            raise RuntimeError(f"simulated crash before step {self.step}")


class NonFiniteLossAtStep(HookBase):
    """Make ``loss_box_reid`` NaN at one global step (1-based), as a diverging run would,
    through a forward hook on the model that scales the term by NaN."""

    def __init__(self, step: int, term: str = "loss_box_reid"):
        self.step, self.term = int(step), term
        self._handle = None

    def before_step(self) -> None:
        if self.trainer.global_step + 1 == self.step:
            self._handle = self.trainer.model.register_forward_hook(self._poison)

    def _poison(self, module, args, output):
        return {**output, self.term: output[self.term] * float("nan")}

    def after_step(self) -> None:
        self._remove()

    def on_exception(self, exc: BaseException) -> None:
        self._remove()

    def _remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
