"""Training runs killed for real at named points, then --resume (real processes,
real MLflow sqlite store, real files; slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oimnet.engine.tracking import get_client
from tests.smoke import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {**TINY_RUN, "DEVICE": "cpu"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults_train_data") / "synthetic"


def _train(fault: str, out: Path, data: Path, uri: str, *extra: str, resume: bool = False, **overrides):
    opts = {**TINY, "OUTPUT_DIR": str(out), "INPUT.DATA_ROOT": str(data), **overrides}
    args = [
        sys.executable,
        "-m",
        "tests.run_train_fault",
        fault,
        "--cfg",
        str(ROOT / "experiments" / "synthetic.yaml"),
        "--tracking-uri",
        uri,
        *extra,
        *(["--resume"] if resume else []),
    ]
    for k, v in opts.items():
        args += [k, str(v)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _runs(uri):
    client = get_client(uri)
    exp = client.get_experiment_by_name("oimnet-smoke") or client.search_experiments()[0]
    return client, client.search_runs([exp.experiment_id])


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_killed_during_the_final_evaluation_then_resumed(tmp_path, data_root):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    r = _train("kill-in-final-eval", out, data_root, uri)
    assert r.returncode == -9, r.stderr[-3000:]
    assert (out / "epoch_002.pth").exists() and not (out / "results.json").exists()

    r = _train("none", out, data_root, uri, resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "evaluation and logging did not finish; doing them now" in (out / "train.log").read_text()
    assert (out / "results.json").exists() and (out / "epoch_002.done").exists()
    client, runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, finished
    run_id = runs[0].info.run_id
    assert _steps(client, run_id, "mAP") == [2] and _steps(client, run_id, "epoch_time_s") == [1, 2]
    assert "mAP_gt" in runs[0].data.metrics

    # --eval --ckpt of this ProtoNorm checkpoint under a BatchNorm config: named, refused
    r = _train(
        "none",
        tmp_path / "eval",
        data_root,
        uri,
        "--eval",
        "--ckpt",
        str(out / "epoch_002.pth"),
        **{"MODEL.ROI_HEAD.NORM_TYPE": "batchnorm"},
    )
    assert r.returncode in (1, 2), r.stderr[-3000:]
    assert "MODEL.ROI_HEAD.NORM_TYPE: 'protonorm' in the checkpoint, 'batchnorm' now" in r.stderr
    assert "Traceback" not in r.stderr


def test_killed_after_a_checkpoint_before_its_metrics_then_resumed(tmp_path, data_root):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    r = _train("kill-after-checkpoint-1", out, data_root, uri)
    assert r.returncode == -9, r.stderr[-3000:]
    client, runs = _runs(uri)
    assert _steps(client, runs[0].info.run_id, "epoch_time_s") == []  # epoch 1 checkpointed, not logged

    # a changed model/loss key is refused, listing the keys; nothing is touched
    before = (out / "epoch_001.pth").read_bytes()
    r = _train("none", out, data_root, uri, resume=True, **{"MODEL.LOSS.TYPE": "OIM", "SOLVER.BASE_LR": 0.01})
    assert r.returncode in (1, 2), r.stderr[-3000:]
    assert "MODEL.LOSS.TYPE: 'LOIM' in the checkpoint, 'OIM' now" in r.stderr and "SOLVER.BASE_LR" in r.stderr
    assert "Traceback" not in r.stderr and (out / "epoch_001.pth").read_bytes() == before

    # keys that do not change what is trained may change
    r = _train("none", out, data_root, uri, resume=True, DISP_PERIOD=3, EVAL_PERIOD=1)
    assert r.returncode == 0, r.stderr[-3000:]
    client, runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    assert _steps(client, run_id, "epoch_time_s") == [1, 2]  # epoch 1's metrics logged on resume
    assert _steps(client, run_id, "train_loss") == [1, 2]

    # the latest checkpoint truncated: --resume falls back to the newest intact one and says so
    latest = out / "epoch_002.pth"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    r = _train("none", out, data_root, uri, resume=True)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "epoch_002.pth cannot be read" in log and "falling back to" in log and "epoch_001.pth" in log
    assert (out / "epoch_002.pth.corrupt").exists()
    assert torch.load(latest, map_location="cpu", weights_only=True)["epoch"] == 2


def test_killed_while_writing_the_first_checkpoint_then_resumed(tmp_path, data_root):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    r = _train("kill-writing-checkpoint", out, data_root, uri)
    assert r.returncode == -9, r.stderr[-3000:]
    tmp_files = [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert tmp_files and not list(out.glob("epoch_*.pth"))
    first = (out / "mlflow_run_id").read_text().strip()

    r = _train("none", out, data_root, uri, resume=True, **{"SOLVER.MAX_EPOCHS": 1})
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # stale temporary file removed
    client, runs = _runs(uri)
    status = {r.info.run_id: r.info.status for r in runs}
    assert status[first] == "KILLED"  # closed, not RUNNING forever
    assert "RUNNING" not in status.values() and "FINISHED" in status.values()


def test_full_disk_while_writing_a_checkpoint(tmp_path, data_root):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", mnt / "out"
        r = _train("fill-disk-after-epoch-1", out, data_root, uri)
        assert r.returncode == 1, r.stderr[-3000:]
        assert f"no space left on device writing {out / 'epoch_002.pth'}" in r.stderr
        assert "Traceback" not in r.stderr
        assert torch.load(out / "epoch_001.pth", map_location="cpu", weights_only=True)["epoch"] == 1  # kept
        assert not (out / "epoch_002.pth").exists() and not [p for p in out.iterdir() if ".tmp-" in p.name]
        _, runs = _runs(uri)
        assert [r.info.status for r in runs] == ["FAILED"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
