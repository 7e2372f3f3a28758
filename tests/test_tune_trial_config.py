"""A trial's config crosses processes as one nested mapping (trials.json, the Tune
trial, a search's sampled values) and is flattened only into MLflow params."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oimnet.config import flatten, load_config, to_mapping
from tune.grids import expand, load_grid, resolve_grid_path
from tune.sweep import SweepError, load_trials, save_trials
from tune.trainable import searched_spec


@pytest.fixture(scope="module")
def specs():
    return expand(load_grid(resolve_grid_path("micro")), dataset="synthetic", profile="smoke", seeds=[1])


def test_trial_config_is_the_merged_nested_mapping_and_loads_back(specs):
    spec = specs[1]
    assert not any("." in k for k in spec.config)  # sections, not dotted keys
    assert spec.config["MODEL"]["LOSS"]["TYPE"] == "LOIM" and spec.get("MODEL.ROI_HEAD.NORM_TYPE") == "protonorm"
    assert spec.get("SOLVER.MAX_EPOCHS") == 1 and spec.get("SEED") == 1
    crossed = json.loads(json.dumps(spec.to_dict()))["config"]  # what trials.json and Ray carry
    assert crossed == spec.config
    cfg = load_config(None, crossed)
    assert to_mapping(cfg) == spec.config
    # flattened once, for MLflow params: the dotted keys a user greps for
    assert flatten(cfg)["MODEL.LOSS.TYPE"] == "LOIM" and flatten(cfg)["SOLVER.LR_DECAY_MILESTONES"] == [1]
    spec.set("DEVICE", "cpu")
    assert spec.config["DEVICE"] == "cpu"


def test_searched_values_are_applied_onto_the_nested_mapping(specs):
    spec = {**specs[0].to_dict(), "tags": {"row": specs[0].row}}
    before = json.dumps(spec, sort_keys=True)
    out = searched_spec(spec, {"SOLVER.BASE_LR": np.float64(0.0123), "MODEL.LOSS.OIM_EPS": 0.25}, "r00-OIMNet-s1-abc")
    assert json.dumps(spec, sort_keys=True) == before  # the base spec is left as it was
    assert out["config"]["SOLVER"]["BASE_LR"] == 0.0123 and type(out["config"]["SOLVER"]["BASE_LR"]) is float
    assert out["config"]["MODEL"]["LOSS"]["OIM_EPS"] == 0.25
    assert out["config"]["OUTPUT_DIR"].endswith("r00-OIMNet-s1-abc")
    assert out["config"]["MLFLOW"]["RUN_NAME"] == "BASE_LR=0.0123 OIM_EPS=0.25 s1"
    assert not any("." in k for k in out["config"])
    cfg = load_config(None, out["config"])
    assert cfg.SOLVER.BASE_LR == 0.0123 and cfg.MODEL.LOSS.OIM_EPS == 0.25


def test_resume_reads_the_flat_trials_json_of_an_older_sweep(specs, tmp_path):
    new = {s.key: s.to_dict() for s in specs}
    save_trials(tmp_path, new)
    assert load_trials(tmp_path) == json.loads(json.dumps(new))
    old = {k: {**d, "config": flatten(load_config(None, d["config"]))} for k, d in new.items()}
    save_trials(tmp_path, old)  # as a sweep folder of before looked
    assert any("." in k for k in json.loads((tmp_path / "trials.json").read_text())[specs[0].key]["config"])
    assert load_trials(tmp_path) == json.loads(json.dumps(new))
    (tmp_path / "trials.json").write_text(json.dumps({specs[0].key: {"config": ["not", "a", "mapping"]}}))
    with pytest.raises(SweepError, match=r"trials\.json: expected \{trial key"):
        load_trials(tmp_path)


def test_ray_train_workers_get_the_nested_mapping_with_absolute_paths(monkeypatch, tmp_path):
    from oimnet.engine.workers import workers_config

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None, {"SOLVER.WORLD_SIZE": 2, "OUTPUT_DIR": "out/run", "INPUT.DATA_ROOT": "data", "DEVICE": "cuda"}
    )
    config, use_gpu = workers_config(cfg, cluster_gpus=1)  # fewer GPUs than workers: gloo on CPUs
    assert not use_gpu and config["DEVICE"] == "cpu"
    assert config["OUTPUT_DIR"] == str(tmp_path / "out" / "run") and config["INPUT"]["DATA_ROOT"] == str(
        tmp_path / "data"
    )
    crossed = json.loads(json.dumps(config))
    assert to_mapping(load_config(None, crossed)) == config  # what each worker loads
    assert cfg.DEVICE == "cuda" and cfg.OUTPUT_DIR == "out/run"  # the caller's config is left as it was
    config, use_gpu = workers_config(cfg, cluster_gpus=2)
    assert use_gpu and config["DEVICE"] == "cuda"
