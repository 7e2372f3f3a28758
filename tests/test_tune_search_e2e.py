"""A searched grid end to end: real Ray Tune, ASHA, a real MLflow sqlite store, SIGINT and --resume (slow).

The trials train a tiny generated world for 3 epochs. ASHA needs a metric
that differs between trials from the first epoch; on this world an untrained
detector scores mAP 0 everywhere, so the test ranks on the training loss,
whose scale the searched loss weight sets (the shipped grid ranks on
val_mAP; the scheduler and its bookkeeping are the same). The trials hold
out a validation split: val metrics every epoch, the test split once at the
end (so a stopped trial has no test numbers).
"""

import json
import subprocess
from pathlib import Path

import pytest

from oimnet.engine.tracking import get_client
from tests.sweep_driver import RUN, driver_env, interrupt_when, start_sweep

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

GRID = """
description: "test: random search + ASHA on a tiny world"
profiles:
  smoke:
    SOLVER.MAX_EPOCHS: 3
    SOLVER.LR_DECAY_MILESTONES: [3]
    EVAL_PERIOD: 1
    INPUT.MIN_SIZE: 128
    INPUT.MAX_SIZE: 160
    INPUT.SYNTH.IDENTITIES: 20
    INPUT.SYNTH.FRAMES: 30
    VAL.ENABLED: true
    VAL.FRACTION: 0.25
    MODEL.RPN.POST_NMS_TOPN_TRAIN: 100
    MODEL.RPN.POST_NMS_TOPN_TEST: 50
    MODEL.ROI_HEAD.BATCH_SIZE_TRAIN: 32
    MODEL.LOSS.LUT_SIZE: 100
    MODEL.LOSS.CQ_SIZE: 50
fixed: {MODEL.ROI_HEAD.NORM_TYPE: protonorm, MODEL.LOSS.TYPE: LOIM}
rows:
  - {name: OIMNet++, overrides: {}}
search:
  algorithm: random
  num_samples: 4
  seed: 3
  metric: train_loss
  mode: min
  space:
    SOLVER.LW_BOX_REID: {loguniform: [0.05, 5.0]}
  scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
"""


def test_asha_search_stops_trials_early_and_resumes(tmp_path):
    grid = tmp_path / "asha.yaml"
    grid.write_text(GRID)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "rr"
    base = ["--storage", str(storage), "--experiment", "s", "--tracking-uri", uri]
    proc = start_sweep(["--grid", str(grid), "--max-concurrent", "2"] + base)
    outputs = storage / "s" / "outputs"
    # interrupt once the third sampled configuration has started training
    out = interrupt_when(
        lambda: len(list(outputs.glob("*/train.log"))) >= 3, proc, "the third trial's start", timeout=400
    )
    assert proc.returncode == 130, out[-3000:]
    state = json.loads((storage / "s" / "sweep.json").read_text())
    assert state["search"]["num_samples"] == 4

    r = subprocess.run(
        RUN + ["--resume"] + base, capture_output=True, text=True, env=driver_env(), timeout=600, check=False
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    client = get_client(uri)
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"  # the same parent, continued
    parent = client.get_run(state["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'"
    )
    assert all(c.info.status != "RUNNING" for c in children)
    finished = [c for c in children if c.info.status == "FINISHED"]
    # four sampled configurations, one FINISHED child run each (an interrupted attempt may leave a KILLED one)
    assert len({c.data.tags["trial"] for c in finished}) == 4 == len(finished)
    epochs = {}
    for c in finished:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "train_loss")]
        epochs[c.data.tags["trial"]] = (
            max(steps),
            c.data.tags.get("stopped_early"),
            float(c.data.params["SOLVER.LW_BOX_REID"]),
        )
        assert c.data.tags["row"].startswith("LW_BOX_REID=") and c.data.tags["paper_label"] == ""
    stopped = {k: v for k, v in epochs.items() if v[1] is not None}
    full = {k: v for k, v in epochs.items() if v[1] is None}
    assert stopped, f"ASHA stopped no trial: {epochs}"
    assert full, f"every trial stopped: {epochs}"
    for n, tag, _ in stopped.values():  # fewer epochs in their MLflow runs, and the tag says when
        assert n < 3 and int(tag) == n
    assert all(n == 3 for n, _, _ in full.values())
    for c in finished:
        val_steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "val_mAP"))
        test_steps = [m.step for m in client.get_metric_history(c.info.run_id, "mAP")]
        n = epochs[c.data.tags["trial"]][0]
        assert val_steps == list(range(1, n + 1))
        assert test_steps == ([3] if n == 3 else [])
    assert "search: 4 trials with train_loss" in r.stdout and "stopped early by ASHA" in r.stdout
    best = (storage / "s" / "best.txt").read_text()
    assert "SOLVER.LW_BOX_REID = " in best
    assert (storage / "s" / "plots" / "search_SOLVER_LW_BOX_REID.png").is_file()
