"""Sweep folders and stores that --resume must not trust or cannot use:
planted pickles, another MLflow store, a missing parent run, a bad store."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from tests.sweep_driver import RUN, driver_env
from tune.sweep import SweepState, reopen_parent, save_trials

ROOT = Path(__file__).resolve().parents[1]


class _Plant:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _sweep_folder(storage: Path, name: str, uri: str, parent: str | None = "0" * 32) -> Path:
    exp = storage / name
    state = SweepState(
        experiment=name,
        exp_dir=str(exp),
        tracking_uri=uri,
        mlflow_experiment="oimnet-test",
        grid="micro",
        grid_file=str(ROOT / "experiments" / "grids" / "micro.yaml"),
        profile="smoke",
        dataset="synthetic",
        seeds=[1],
        resources={"CPU": 1},
        device="cpu",
        parent_run_id=parent,
    )
    exp.mkdir(parents=True)
    save_trials(exp, {})
    state.save()
    return exp


@pytest.mark.parametrize("how", ["writable by others", "owned by another user"])
def test_resume_refuses_a_folder_others_could_have_written(tmp_path, how):
    marker = tmp_path / "pwned"
    exp = _sweep_folder(tmp_path / "rr", "planted", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tuner_pkl = exp / "tuner.pkl"
    tuner_pkl.write_bytes(pickle.dumps(_Plant(str(marker))))
    if how == "writable by others":
        os.chmod(tuner_pkl, 0o666)
        expect = "writable by others"
    else:
        if os.getuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(tuner_pkl, 65534, 65534)
        expect = "owned by uid 65534"
    r = subprocess.run(
        RUN + ["--resume", "--experiment", "planted", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=300,
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert str(tuner_pkl) in r.stderr and expect in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_resume_against_another_store_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'sweep.db'}"
    _sweep_folder(tmp_path / "rr", "s", uri)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    r = subprocess.run(
        RUN + ["--resume", "--experiment", "s", "--storage", str(tmp_path / "rr"), "--tracking-uri", other],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert uri in r.stderr and str(tmp_path / "other.db") in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "other.db").exists()


def test_resume_of_a_sweep_without_parent_run_makes_one(tmp_path):
    from oimnet.engine.tracking import get_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = _sweep_folder(tmp_path / "rr", "noparent", uri, parent=None)  # what a driver dying in start_parent left
    state = SweepState.load(exp)
    reopen_parent(state, 0, [exp / "trials.json"])
    assert state.parent_run_id
    assert json.loads((exp / "sweep.json").read_text())["parent_run_id"] == state.parent_run_id
    assert get_client(uri).get_run(state.parent_run_id).data.tags["sweep"] == "noparent"


def test_resume_with_a_parent_missing_from_the_store_is_named(tmp_path):
    from tune.sweep import SweepError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = SweepState.load(_sweep_folder(tmp_path / "rr", "gone", uri, parent="f" * 32))
    with pytest.raises(SweepError, match="f" * 32 + ".* is not in the MLflow store"):
        reopen_parent(state, 0, [])


def test_new_sweep_on_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database\n" * 10)
    r = subprocess.run(
        RUN
        + [
            "--grid",
            "micro",
            "--storage",
            str(tmp_path / "rr"),
            "--experiment",
            "x",
            "--tracking-uri",
            f"sqlite:///{bad}",
        ],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=300,
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "rr" / "x" / "sweep.json").exists()
    assert bad.read_text().startswith("not a database")
