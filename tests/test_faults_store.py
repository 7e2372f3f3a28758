"""One new sqlite MLflow store used by several processes started together."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each process imports everything, says it is ready, and waits for "go", so
# all of them open the new store within a few milliseconds of each other.
RUNNER = textwrap.dedent("""
    import os, sys, time
    uri, ready, go = sys.argv[1:4]
    from oimnet.engine.tracking import RunLogger
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    run = RunLogger.start(uri, "race", run_name="r")
    run.log_metrics({"loss": 1.0}, 0)
    run.end()
    print("ok", run.run_id)
""")


def _start_together(uri: str, tmp_path: Path, n: int) -> list[subprocess.CompletedProcess]:
    procs = []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RUNNER, uri, str(tmp_path / f"ready{i}"), str(tmp_path / "go")],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
        assert time.time() < deadline, "runners did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_three_runs_started_together_on_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    results = _start_together(uri, tmp_path, 3)
    for r in results:
        assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    # the store works for a later run too
    results = _start_together(uri, tmp_path / "again", 1) if (tmp_path / "again").mkdir() is None else []
    assert results[0].returncode == 0, results[0].stderr[-2000:]


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    import pytest

    from oimnet.engine.tracking import get_client
    from oimnet.tracking_store import StoreError

    bad = tmp_path / "notes.db"
    bad.write_text("these are my notes, not a database\n" * 20)
    with pytest.raises(StoreError, match="notes.db"):
        get_client(f"sqlite:///{bad}")
    assert bad.read_text().startswith("these are my notes")  # nothing lost
