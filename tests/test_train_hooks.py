"""The trainer's hook interface, seen from outside: every stage in order, exceptions
reach on_exception and after_train, and a run without MLflow/Ray installed."""

from __future__ import annotations

import sys

import pytest

from oimnet.engine.hooks import HookBase
from oimnet.engine.trainer import train_run
from tests.smoke import TINY_RUN, smoke_config

pytestmark = pytest.mark.slow


class Recorder(HookBase):
    def __init__(self):
        self.calls: list[tuple] = []

    def _rec(self, stage, extra=None):
        t = self.trainer
        self.calls.append((stage, t.epoch, t.global_step, extra))

    def before_train(self):
        self._rec("before_train", (self.trainer.rank, self.trainer.world_size, self.trainer.is_main))

    def before_epoch(self):
        self._rec("before_epoch")

    def before_step(self):
        self._rec("before_step")

    def after_step(self):
        self._rec("after_step", sorted(self.trainer.step_output))

    def after_epoch(self):
        t = self.trainer
        self._rec("after_epoch", (t.epoch_checkpoint.name if t.epoch_checkpoint else None, sorted(t.epoch_metrics)))

    def after_train(self):
        self._rec("after_train")

    def on_exception(self, exc):
        self._rec("on_exception", str(exc))


def test_a_hook_from_outside_sees_every_stage_without_mlflow_or_ray(tmp_path, monkeypatch):
    # Neither is importable: an untracked run must not need them.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = smoke_config(tmp_path / "h", tmp_path / "data", **TINY_RUN)
    rec = Recorder()
    metrics = train_run(cfg, hooks=[rec], track=False)

    stages = [c[0] for c in rec.calls]
    assert stages[0] == "before_train" and stages[-1] == "after_train" and "on_exception" not in stages
    assert rec.calls[0][3] == (0, 1, True)
    steps = [c for c in rec.calls if c[0] == "after_step"]
    n = len(steps) // 2
    assert n >= 2 and len(steps) == 2 * n
    # before_epoch, n x (before_step, after_step), after_epoch -- per epoch
    per_epoch = ["before_epoch"] + ["before_step", "after_step"] * n + ["after_epoch"]
    assert stages[1:-1] == per_epoch * 2
    # global_step counts the finished steps: k-1 before step k, k after it
    befores = [c[2] for c in rec.calls if c[0] == "before_step"]
    assert befores == list(range(2 * n)) and [c[2] for c in steps] == list(range(1, 2 * n + 1))
    assert "loss" in steps[0][3] and "loss_box_reid" in steps[0][3]
    ends = [c for c in rec.calls if c[0] == "after_epoch"]
    assert [c[1] for c in ends] == [0, 1]
    (ck1, m1), (ck2, m2) = ends[0][3], ends[1][3]
    assert (ck1, ck2) == ("epoch_001.pth", "epoch_002.pth")
    assert "train_loss" in m1 and "mAP" not in m1  # EVAL_PERIOD 2: epoch 1 is not evaluated
    assert {"mAP", "top1", "mAP_gt", "top1_gt", "epoch_time_s", "cpu_time_s"} <= set(m2)
    assert "cpu_time_s" in m1  # CPU seconds of the run so far, every epoch
    assert {"mAP", "mAP_gt"} <= set(metrics) and 0.0 <= metrics["mAP"] <= 1.0
    assert not (tmp_path / "h" / "out" / "mlflow_run_id").exists()


class CpuSeen(HookBase):
    def __init__(self):
        self.values: list[float] = []

    def after_epoch(self):
        self.values.append(self.trainer.epoch_metrics["cpu_time_s"])


def test_no_ground_truth_pass_when_eval_gt_at_end_is_off(tmp_path):
    cfg = smoke_config(tmp_path / "g", tmp_path / "data", **{**TINY_RUN, "EVAL_GT_AT_END": False})
    seen = CpuSeen()
    metrics = train_run(cfg, hooks=[seen], track=False)
    assert "mAP" in metrics and "mAP_gt" not in metrics and "top1_gt" not in metrics
    out = tmp_path / "g" / "out"
    assert (out / "results_epoch002.json").is_file() and not (out / "results_epoch002_gt.json").exists()
    # CPU seconds since the run started: training and evaluation, growing every epoch
    assert len(seen.values) == 2 and 0 < seen.values[0] < seen.values[1]


class FailAtStep(HookBase):
    def before_step(self):
        if self.trainer.global_step == 1:
            raise RuntimeError("boom at step 2")


def test_an_exception_reaches_on_exception_then_after_train(tmp_path):
    cfg = smoke_config(tmp_path / "x", tmp_path / "data", **{**TINY_RUN, "SOLVER.MAX_EPOCHS": 1})
    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom at step 2"):
        train_run(cfg, hooks=[rec, FailAtStep()], track=False)
    stages = [c[0] for c in rec.calls]
    assert stages == [
        "before_train",
        "before_epoch",
        "before_step",
        "after_step",
        "before_step",
        "on_exception",
        "after_train",
    ]
    assert rec.calls[-2][3] == "boom at step 2"
