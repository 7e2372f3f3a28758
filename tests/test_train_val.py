"""Training with a validation split (VAL.ENABLED): val every EVAL_PERIOD, test once at the end (slow)."""

from __future__ import annotations

import json

import pytest

from oimnet.data import load_records
from oimnet.engine.tracking import get_client
from oimnet.engine.trainer import train_run
from tests.smoke import smoke_config

pytestmark = pytest.mark.slow

TINY = {
    "INPUT.SYNTH.FRAMES": 60,
    "INPUT.SYNTH.IDENTITIES": 20,
    "SOLVER.MAX_EPOCHS": 2,
    "SOLVER.LR_DECAY_MILESTONES": [2],
    "EVAL_PERIOD": 1,
    "MODEL.LOSS.LUT_SIZE": 100,
    "MODEL.LOSS.CQ_SIZE": 32,
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 32,
    "INPUT.MIN_SIZE": 128,
    "INPUT.MAX_SIZE": 160,
    "VAL.ENABLED": True,
    "VAL.FRACTION": 0.25,
    "VAL.SEED": 4,
}


def test_val_split_run_evaluates_val_each_period_and_test_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = tmp_path / "world"
    cfg = smoke_config(tmp_path, data, **TINY)
    final = train_run(cfg, tracking_uri=uri)
    out = tmp_path / "out"
    split = json.loads((out / "val_split.json").read_text())
    train_ids = {int(p) for r in load_records("synthetic", str(data), "train") for p in r["pids"] if p != 5555}
    assert split["seed"] == 4 and split["fraction"] == 0.25
    assert len(split["val_ids"]) == round(0.25 * len(train_ids))
    client = get_client(uri)
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED"
    # the LUT holds the identities left for training, and the logged config says so
    assert run.data.params["MODEL.LOSS.LUT_SIZE"] == str(len(split["train_ids"]))
    assert run.data.params["VAL.ENABLED"] == "True"

    def steps(key):
        return [m.step for m in client.get_metric_history(run.info.run_id, key)]

    assert steps("val_mAP") == [1, 2] and steps("val_top1") == [1, 2]
    assert steps("mAP") == [2]  # the test split once, after the last epoch
    assert run.data.metrics["val_queries"] == len(split["queries"])
    assert set(final) >= {"mAP", "top1"}
    assert (out / "results_val_epoch001.json").is_file() and (out / "results_epoch002.json").is_file()
    # results.json is the test split's
    assert json.loads((out / "results.json").read_text())["n_queries"] == len(
        load_records("synthetic", str(data), "query")
    )

    # resuming with other split settings is refused (the saved split is never silently replaced)
    other = smoke_config(tmp_path, data, **{**TINY, "VAL.SEED": 5, "SOLVER.MAX_EPOCHS": 3})
    with pytest.raises(ValueError, match="val_split.json: validation split of dataset synthetic, seed 4"):
        train_run(other, resume=True, tracking_uri=uri)
