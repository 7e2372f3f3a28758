"""Shared by the tests that run the sweep driver (`tune/run_ablation.py`) as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from oimnet.engine.tracking import get_client

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "tune" / "run_ablation.py")]
TABLES = [sys.executable, str(ROOT / "analysis" / "make_tables.py")]


def driver_env(**extra: str) -> dict:
    """This environment without a Ray address or MLflow store, CPU only, Ray token auth off."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(CUDA_VISIBLE_DEVICES="", RAY_AUTH_MODE="disabled", **extra)
    return env


def sweep_children(uri: str, parent_id: str) -> list:
    """The MLflow child runs (trials) of a sweep's parent run."""
    client = get_client(uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def start_sweep(args: list[str], **popen) -> subprocess.Popen:
    """`run_ablation.py ARGS` in the background, stdout and stderr merged into ``proc.stdout``."""
    return subprocess.Popen(
        RUN + args, env=driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Poll ``cond()`` until true; fail if the driver exits first or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"driver exited before {what}: " + proc.stdout.read()[-3000:]
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def interrupt_when(cond, proc: subprocess.Popen, what: str, sig=signal.SIGINT, timeout: float = 300) -> str:
    """Send ``sig`` once ``cond()`` holds; return the driver's output after it exits (killed if it hangs)."""
    try:
        wait_for(cond, proc, what, timeout)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out
