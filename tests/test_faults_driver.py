"""The sweep driver killed for real: SIGTERM (a scheduler, docker stop) and
kill -9 just after a trial finished (slow: real Ray, real MLflow sqlite)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from oimnet.engine.tracking import get_client
from tests.sweep_driver import RUN, driver_env, interrupt_when, start_sweep, sweep_children, wait_for
from tune import local_ray

pytestmark = pytest.mark.slow


def test_sigterm_to_the_driver_is_handled_like_ctrl_c(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "rr"
    base = ["--storage", str(storage), "--experiment", "term", "--tracking-uri", uri]
    proc = start_sweep(["--grid", "micro", "--max-concurrent", "1"] + base)
    log = storage / "term" / "outputs" / "r00-OIMNet-s1" / "train.log"
    out = interrupt_when(
        lambda: log.exists() and "MLflow" in log.read_text(), proc, "the first trial's start", sig=signal.SIGTERM
    )
    assert proc.returncode == 143, out[-3000:]
    assert "--resume --experiment term" in out and "SIGTERM" in out
    state = json.loads((storage / "term" / "sweep.json").read_text())
    assert get_client(uri).get_run(state["parent_run_id"]).info.status == "KILLED"
    children = sweep_children(uri, state["parent_run_id"])
    assert children and {c.info.status for c in children} == {"KILLED"}
    assert not (storage / "term" / local_ray.RECORD).exists()  # a driver that exits removes its record


def test_kill_9_just_after_a_trial_finished_then_resume(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "rr"
    base = ["--storage", str(storage), "--experiment", "k9", "--tracking-uri", uri]
    proc = start_sweep(["--grid", "micro", "--max-concurrent", "1"] + base, start_new_session=True)
    first = storage / "k9" / "outputs" / "r00-OIMNet-s1" / "train.log"
    try:
        wait_for(lambda: first.exists() and "training done" in first.read_text(), proc, "the first trial's end")
        time.sleep(1.0)  # its MLflow run ends FINISHED right after "training done"
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    record = json.loads((storage / "k9" / local_ray.RECORD).read_text())
    session = record["session_dir"]
    leftover = local_ray.session_pids(session)
    print(f"processes of the killed driver's Ray session still alive: {len(leftover)}")

    r = subprocess.run(RUN + ["--resume"] + base, capture_output=True, text=True, env=driver_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert local_ray.session_pids(session) == []  # the dead driver's cluster was ended
    assert first.read_text().count("training done") == 1  # the finished trial was not retrained
    state = json.loads((storage / "k9" / "sweep.json").read_text())
    children = sweep_children(uri, state["parent_run_id"])
    assert sorted(c.data.tags["row"] for c in children) == ["OIMNet", "OIMNet++"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert "| OIMNet | OIMNet | " in r.stdout and "| OIMNet++ | OIMNet++ | " in r.stdout
