"""A 2-worker trial through Ray Tune end to end: Tune trial -> Ray Train TorchTrainer (2 gloo CPU workers) -> MLflow (slow).

The trial crashes once after its epoch-1 checkpoint (tests/run_sweep_with_crash.py):
Tune retries it, the retry's TorchTrainer resumes from that checkpoint on 2 workers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oimnet.engine.tracking import get_client

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_two_worker_trial_of_the_micro_grid_through_tune_retried_from_its_checkpoint(tmp_path):
    # The micro grid's OIMNet++ row alone (one trial keeps the test to a few minutes on 2 cores).
    micro = (ROOT / "experiments" / "grids" / "micro.yaml").read_text()
    grid = tmp_path / "micro1.yaml"
    grid.write_text(micro.split("  - name: OIMNet\n")[0] + micro[micro.index("  - name: OIMNet++") :])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(CUDA_VISIBLE_DEVICES="", RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-m", "tests.run_sweep_with_crash", "--grid", str(grid), "--workers-per-trial", "2"]
    cmd += ["--storage", str(tmp_path / "rr"), "--experiment", "w2", "--tracking-uri", uri, "--max-concurrent", "1"]
    cmd += ["--set", "SOLVER.MAX_EPOCHS=2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    state = json.loads((tmp_path / "rr" / "w2" / "sweep.json").read_text())
    client = get_client(uri)
    exp = client.get_run(state["parent_run_id"]).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'")
    assert len(children) == 1  # one MLflow child run for the trial, written by rank 0 alone
    child = children[0]
    assert child.info.status == "FINISHED" and child.data.tags["row"] == "OIMNet++"
    assert child.data.params.get("SOLVER.WORLD_SIZE") == "2"
    assert "mAP" in child.data.metrics
    out = tmp_path / "rr" / "w2" / "outputs"
    trial_dir = next(out.iterdir())
    assert (trial_dir / "epoch_001.pth").is_file() and (trial_dir / "epoch_002.pth").is_file()
    assert (trial_dir / "ray_train").is_dir()  # the run went through Ray Train's TorchTrainer
    # Crashed after epoch 1, retried by Tune from the epoch-1 checkpoint: each epoch trained and logged once.
    assert (trial_dir / ".debug_crashed").exists()
    log = (trial_dir / "train.log").read_text()
    assert "resuming from" in log and "epoch_001.pth" in log
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch_time_s")]
    assert sorted(steps) == [1, 2]
