"""End-to-end sweeps with real Ray and a real MLflow sqlite store (slow).

- the two-row micro grid on generated data, on a Ray head started here on
  loopback (--address), with every trial crashing once after epoch 1: the
  retry continues from the epoch-1 checkpoint and the same MLflow child run;
- a sweep interrupted (SIGINT) after its first trial resumes with --resume
  without rerunning that trial.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oimnet.engine.tracking import get_client
from tests.sweep_driver import RUN, TABLES, driver_env, interrupt_when, start_sweep, sweep_children

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"r00-OIMNet-s1": "OIMNet", "r01-OIMNetpp-s1": "OIMNet++"}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 (own ports, own temp dir); stopped by process group afterwards."""
    temp = tmp_path_factory.mktemp("rayhead")
    port = _free_port()
    args = [
        sys.executable,
        "-c",
        "from ray.scripts.scripts import main; main()",
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--include-dashboard",
        "false",
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--dashboard-agent-grpc-port",
        str(_free_port()),
        "--metrics-export-port",
        str(_free_port()),
        "--runtime-env-agent-port",
        str(_free_port()),
        "--temp-dir",
        str(temp),
    ]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(args, env=driver_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"127.0.0.1:{port}", temp
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of this head's own group only
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


def test_micro_grid_end_to_end_on_a_ray_head_with_crash_retry(ray_head, tmp_path):
    address, head_temp = ray_head
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "rr"
    crashing = [sys.executable, "-m", "tests.run_sweep_with_crash"]  # every trial crashes once after epoch 1
    cmd = crashing + [
        "--grid",
        "micro",
        "--address",
        address,
        "--storage",
        str(storage),
        "--experiment",
        "e2e",
        "--tracking-uri",
        uri,
        "--set",
        "SOLVER.MAX_EPOCHS=2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=driver_env(), timeout=420, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp_dir = storage / "e2e"
    state = json.loads((exp_dir / "sweep.json").read_text())
    client = get_client(uri)
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.tags[k] for k in ("grid", "profile", "dataset", "seeds")} == {
        "grid": "micro",
        "profile": "smoke",
        "dataset": "synthetic",
        "seeds": "1",
    }

    children = sweep_children(uri, state["parent_run_id"])
    assert sorted(c.data.tags["row"] for c in children) == ["OIMNet", "OIMNet++"]  # one child per trial, retry included
    stored = {}
    for c in children:
        assert c.info.status == "FINISHED"
        tags = c.data.tags
        assert tags["seed"] == "1" and tags["dataset"] == "synthetic" and tags["profile"] == "smoke"
        assert tags["grid"] == "micro" and tags["paper_label"] == tags["row"] and tags["git_commit"]
        # crashed after epoch 1, resumed from its checkpoint: epoch 1 trained once, epoch 2 once
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "epoch_time_s")]
        assert sorted(steps) == [1, 2]
        stored[tags["row"]] = (c.data.metrics["mAP"], c.data.metrics["top1"])
    for key in ROWS:
        out = exp_dir / "outputs" / key
        assert (out / ".debug_crashed").exists()
        assert "resuming from" in (out / "train.log").read_text()
    # the trials ran on the head started above, not on a local Ray
    head_logs = " ".join(p.read_text(errors="ignore") for p in head_temp.glob("session_*/logs/worker-*.out"))
    assert all(key in head_logs for key in ROWS)

    # the table printed at the end, and make_tables on the parent, show the stored values
    for out_text in (
        r.stdout,
        subprocess.run(
            TABLES + ["--parent", state["parent_run_id"], "--tracking-uri", uri],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout,
    ):
        for row, (m, t1) in stored.items():
            line = next(x for x in out_text.splitlines() if x.startswith(f"| {row} | {row} | "))
            assert line.endswith(f" | 1 | {m * 100:.1f} | {t1 * 100:.1f} |"), out_text
        assert "One seed per row" in out_text
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000" in r.stdout
    assert sorted(p.name for p in (exp_dir / "plots").iterdir()) == [
        "map_per_epoch_synthetic.png",
        "table_synthetic.png",
    ]


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "rr"
    base = ["--storage", str(storage), "--experiment", "int", "--tracking-uri", uri]
    proc = start_sweep(["--grid", "micro", "--max-concurrent", "1"] + base)
    outputs = storage / "int" / "outputs"
    # max-concurrent 1: the second trial starts only once the first has terminated
    second = outputs / "r01-OIMNetpp-s1" / "train.log"
    out = interrupt_when(second.exists, proc, "the second trial's start")
    assert proc.returncode == 130, out[-3000:]
    assert "--resume --experiment int" in out
    state = json.loads((storage / "int" / "sweep.json").read_text())
    client = get_client(uri)
    assert client.get_run(state["parent_run_id"]).info.status == "KILLED"
    first = [c for c in sweep_children(uri, state["parent_run_id"]) if c.data.tags["row"] == "OIMNet"]
    assert [c.info.status for c in first] == ["FINISHED"]

    r = subprocess.run(RUN + ["--resume"] + base, capture_output=True, text=True, env=driver_env(), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"  # the same parent continued
    children = sweep_children(uri, state["parent_run_id"])
    oimnet = [c for c in children if c.data.tags["row"] == "OIMNet"]
    assert [c.info.run_id for c in oimnet] == [first[0].info.run_id]  # not rerun
    assert (outputs / "r00-OIMNet-s1" / "train.log").read_text().count("training done") == 1
    finished = [c for c in children if c.data.tags["row"] == "OIMNet++" and c.info.status == "FINISHED"]
    assert len(finished) == 1
    assert all(c.info.status != "RUNNING" for c in children)
    assert "| OIMNet | OIMNet | LOSS.TYPE=OIM ROI_HEAD.NORM_TYPE=none | 1 |" in r.stdout
    assert "| OIMNet++ | OIMNet++ | LOSS.TYPE=LOIM ROI_HEAD.NORM_TYPE=protonorm | 1 |" in r.stdout
