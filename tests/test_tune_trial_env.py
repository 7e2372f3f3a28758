"""`run_ablation.py --trial-env KEY=VALUE`: what reaches a trial's environment."""

from __future__ import annotations

import os

import pytest

from tune.run_ablation import build_parser, prepare_new
from tune.sweep import SweepState
from tune.trainable import apply_trial_env


def _args(tmp_path, *extra):
    return build_parser().parse_args(
        ["--grid", "micro", "--storage", str(tmp_path), "--experiment", "env", "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    )  # fmt: skip


def test_trial_env_is_saved_with_the_sweep_and_set_in_the_trial(tmp_path, monkeypatch):
    args = _args(tmp_path, "--trial-env", "OIMNET_TEST_A=1", "--trial-env", "OIMNET_TEST_B=x=y", "--trial-env", "C=")
    state, _, _ = prepare_new(args)
    assert state.env == {"OIMNET_TEST_A": "1", "OIMNET_TEST_B": "x=y", "C": ""}  # split at the first '='
    state.save()
    resumed = SweepState.load(state.exp_dir)  # --resume gives the trials the same environment
    assert resumed.env == state.env
    for key in resumed.env:
        monkeypatch.setenv(key, "before")  # undone after the test
    apply_trial_env(resumed.env)  # what run_trial does before training
    assert (os.environ["OIMNET_TEST_A"], os.environ["OIMNET_TEST_B"], os.environ["C"]) == ("1", "x=y", "")


def test_no_trial_env_leaves_the_trial_environment_alone(tmp_path, monkeypatch):
    state, _, _ = prepare_new(_args(tmp_path))
    assert state.env == {}
    before = dict(os.environ)
    apply_trial_env(state.env)
    assert dict(os.environ) == before


def test_trial_env_without_a_value_exits_2_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        prepare_new(_args(tmp_path, "--trial-env", "OIMNET_TEST_A"))
    assert exc.value.code == 2
    assert "--trial-env OIMNET_TEST_A: expected KEY=VALUE" in capsys.readouterr().err
