"""Bad files given to the CLIs: a named error, exit 1 or 2, no traceback, nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout
    )


@pytest.mark.parametrize("content", ["text", "list", "dict of ints"])
def test_backbone_weights_that_are_not_a_state_dict(tmp_path, content):
    weights = tmp_path / "resnet50.pth"
    if content == "text":
        weights.write_text("<html>downloaded an error page</html>\n")
    elif content == "list":
        torch.save([1, 2, 3], weights)
    else:
        torch.save({"conv1.weight": 1, "bn1.weight": 2}, weights)
    db = tmp_path / "mlflow.db"
    r = _run(
        [
            "-m",
            "oimnet.train",
            "--tracking-uri",
            f"sqlite:///{db}",
            "INPUT.DATASET",
            "synthetic",
            "INPUT.DATA_ROOT",
            str(tmp_path / "data"),
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "MODEL.BACKBONE.WEIGHTS",
            str(weights),
        ],
        tmp_path,
    )
    assert r.returncode in (1, 2), r.stderr[-2000:]
    assert "MODEL.BACKBONE.WEIGHTS" in r.stderr and str(weights) in r.stderr and "Traceback" not in r.stderr
    assert not db.exists()  # refused before any MLflow run


@pytest.mark.parametrize("kind", ["sqlite", "plain path"])
def test_make_tables_on_a_file_that_is_not_a_database(tmp_path, kind):
    bad = tmp_path / "results.csv"
    bad.write_text("row,mAP\nOIMNet,0.5\n" * 50)
    uri = f"sqlite:///{bad}" if kind == "sqlite" else str(bad)
    r = _run([str(ROOT / "analysis" / "make_tables.py"), "--experiment", "x", "--tracking-uri", uri], tmp_path)
    assert r.returncode in (1, 2), r.stderr[-2000:]
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    assert bad.read_text().startswith("row,mAP")
