"""End-to-end training runs on generated data: MLflow records, exact resume,
non-finite loss, Ctrl-C, and `--eval --ckpt` reproducing the final metrics."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oimnet.checkpoint import find_last_checkpoint
from oimnet.engine.evaluation import evaluate_checkpoint
from oimnet.engine.step import NonFiniteLossError
from oimnet.engine.tracking import get_client
from oimnet.engine.trainer import train_run
from tests.fault_hooks import CrashBeforeStep, NonFiniteLossAtStep
from tests.smoke import ROOT, smoke_config

pytestmark = pytest.mark.slow

# A world small enough for several runs per test session.
TINY = {
    "INPUT.SYNTH.FRAMES": 60,
    "INPUT.SYNTH.IDENTITIES": 16,
    "SOLVER.MAX_EPOCHS": 2,
    "MODEL.LOSS.LUT_SIZE": 16,
    "MODEL.LOSS.CQ_SIZE": 32,
    "DISP_PERIOD": 1,
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 32,
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-world") / "prw"


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _run_of(client, out_dir: Path):
    run_id = (out_dir / "mlflow_run_id").read_text().strip()
    return client.get_run(run_id)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, tiny_data, store):
    client = get_client(store)
    full_cfg = smoke_config(tmp_path / "full", tiny_data, **TINY)
    full = train_run(full_cfg, tracking_uri=store)

    steps_per_epoch = len(_history(client, _run_of(client, Path(full_cfg.OUTPUT_DIR)).info.run_id, "loss")) // 2
    part_cfg = smoke_config(tmp_path / "part", tiny_data, **TINY)
    # crash 3 logged steps into epoch 2: those steps are retrained from epoch 1's checkpoint
    with pytest.raises(RuntimeError, match="simulated crash before step"):
        train_run(part_cfg, tracking_uri=store, hooks=[CrashBeforeStep(steps_per_epoch + 4)])
    out = Path(part_cfg.OUTPUT_DIR)
    crashed = _run_of(client, out)
    assert crashed.info.status == "FAILED"
    assert find_last_checkpoint(out).name == "epoch_001.pth"
    assert len(_history(client, crashed.info.run_id, "loss")) == steps_per_epoch + 3
    resumed = train_run(part_cfg, resume=True, tracking_uri=store)

    # Same MLflow run continued, now finished.
    again = _run_of(client, out)
    assert again.info.run_id == crashed.info.run_id and again.info.status == "FINISHED"
    # Losses step by step (each step once) and the final metrics are exactly those of the uninterrupted run.
    full_run = _run_of(client, Path(full_cfg.OUTPUT_DIR))
    for key in ("loss", "loss_box_reid", "loss_rpn_cls", "lr"):
        assert _history(client, again.info.run_id, key) == _history(client, full_run.info.run_id, key), key
    assert resumed == full
    assert "mAP" in full and 0.0 <= full["mAP"] <= 1.0

    # Params are the flattened config, tags say what reproduces the run, artifacts exist.
    params = full_run.data.params
    assert params["MODEL.ROI_HEAD.NORM_TYPE"] == "protonorm" and params["SOLVER.MAX_EPOCHS"] == "2"
    tags = full_run.data.tags
    for tag in ("git_commit", "device", "seed", "version.torch"):
        assert tags.get(tag), tag
    artifacts = {a.path for a in client.list_artifacts(full_run.info.run_id)}
    assert {"config.yaml", "results.json", "train.log", "checkpoints"} <= artifacts


def test_non_finite_loss_fails_cleanly_and_keeps_the_checkpoint(tmp_path, tiny_data, store):
    cfg = smoke_config(tmp_path / "nan", tiny_data, **TINY)
    out = Path(cfg.OUTPUT_DIR)
    # Find the number of steps per epoch from a dry first epoch: fail at the 2nd step of epoch 2.
    from oimnet.data import build_train_loader
    from oimnet.engine.run_setup import prepare_config

    steps = len(build_train_loader(prepare_config(cfg)))
    with pytest.raises(NonFiniteLossError) as e:
        train_run(cfg, tracking_uri=store, hooks=[NonFiniteLossAtStep(steps + 2)])
    assert f"epoch 2, step {steps + 2}" in str(e.value) and "loss_box_reid = nan" in str(e.value)
    ckpt = out / "epoch_001.pth"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and find_last_checkpoint(out) == ckpt
    assert _run_of(get_client(store), out).info.status == "FAILED"


def test_ctrl_c_marks_the_run_killed(tmp_path, tiny_data, store):
    out = tmp_path / "kill" / "out"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    cmd = [
        sys.executable,
        "-m",
        "oimnet.train",
        "--cfg",
        str(ROOT / "experiments" / "synthetic.yaml"),
        "OUTPUT_DIR",
        str(out),
        "INPUT.DATA_ROOT",
        str(tiny_data),
        "DEVICE",
        "cpu",
    ]
    for k, v in TINY.items():
        cmd += [k, str(v)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "train.log").exists() or "epoch" not in (out / "train.log").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _run_of(get_client(store), out).info.status == "KILLED"


def test_eval_from_checkpoint_reproduces_final_metrics(tmp_path, tiny_data, store):
    cfg = smoke_config(tmp_path / "ev", tiny_data, **{**TINY, "SOLVER.MAX_EPOCHS": 1})
    final = train_run(cfg, tracking_uri=store)
    ckpt = find_last_checkpoint(cfg.OUTPUT_DIR)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    ev_cfg = smoke_config(tmp_path / "ev2", tiny_data, **{**TINY, "SOLVER.MAX_EPOCHS": 1})
    result = evaluate_checkpoint(ev_cfg, str(ckpt), tracking_uri=store)
    assert {"mAP_gt", "top1_gt"} <= set(final)  # the last epoch is also evaluated on ground-truth boxes
    for k, v in final.items():
        if not k.endswith("_gt"):
            assert result[k] == pytest.approx(v, abs=1e-12), k
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest
    # The same through the command line, with usage errors for a missing checkpoint.
    r = subprocess.run(
        [sys.executable, "-m", "oimnet.train", "--eval", "--ckpt", str(tmp_path / "nope.pth")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "nope.pth: checkpoint not found" in r.stderr
