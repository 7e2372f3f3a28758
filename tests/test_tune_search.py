"""The `search:` section of grid files: validation messages and the dry run (no training)."""

import subprocess
from pathlib import Path

import pytest

from tests.sweep_driver import RUN, driver_env
from tune.grids import GridError, expand, load_grid, resolve_grid_path
from tune.search import Search, label, param_space

ROOT = Path(__file__).resolve().parents[1]

BASE = """
rows: [{name: OIMNet++, overrides: {MODEL.LOSS.TYPE: LOIM}}]
search:
"""


def test_shipped_search_grid_searches_lr_and_eps_of_oimnetpp():
    grid = load_grid(resolve_grid_path("lr_eps"))
    s = grid.search
    assert s.algorithm == "optuna" and s.metric == "val_mAP" and s.mode == "max"
    assert s.space == {"SOLVER.BASE_LR": {"loguniform": [0.001, 0.05]}, "MODEL.LOSS.OIM_EPS": {"uniform": [0.0, 0.3]}}
    assert s.scheduler == {"type": "asha", "grace_period": 2, "reduction_factor": 2}
    (spec,) = expand(grid, dataset="synthetic", profile="smoke", seeds=[1])
    assert (spec.get("MODEL.ROI_HEAD.NORM_TYPE"), spec.get("MODEL.LOSS.TYPE")) == ("protonorm", "LOIM")
    # the common smoke profile evaluates only at the end; this search needs ASHA's rung at epoch 2 too
    assert (spec.get("EVAL_PERIOD"), spec.get("SOLVER.MAX_EPOCHS")) == (2, 4)
    assert Search.from_dict(s.to_dict()) == s  # saved in sweep.json and read back on --resume
    space = param_space(s, spec.key)
    assert space["trial"] == spec.key
    lr = space["search"]["SOLVER.BASE_LR"]
    assert (lr.lower, lr.upper) == (0.001, 0.05) and type(lr).__name__ == "Float"
    assert label({"SOLVER.BASE_LR": 0.0123456, "MODEL.ROI_HEAD.NORM_TYPE": "none"}) == "BASE_LR=0.0123 NORM_TYPE=none"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("  num_samples: 4\n", "search.space: expected a mapping"),
        (
            "  num_samples: 0\n  space: {SOLVER.BASE_LR: {uniform: [0.1, 0.2]}}\n",
            "search.num_samples: expected a positive",
        ),
        (
            "  num_samples: 2\n  algorithm: grid\n  space: {SOLVER.BASE_LR: {uniform: [0.1, 0.2]}}\n",
            "search.algorithm: 'grid'; expected one of: random, optuna",
        ),
        (
            "  num_samples: 2\n  space: {SOLVER.BASE_LR: {normal: [0.1, 0.2]}}\n",
            "search.space.SOLVER.BASE_LR: expected one of {uniform",
        ),
        ("  num_samples: 2\n  space: {SOLVER.BASE_LR: {uniform: [0.2, 0.1]}}\n", "low 0.2 must be below high 0.1"),
        ("  num_samples: 2\n  space: {SOLVER.BASE_LR: {loguniform: [0.0, 0.1]}}\n", "bounds must be positive"),
        (
            "  num_samples: 2\n  space: {SOLVER.BASE_LR: {uniform: [0.1, 0.2]}}\n  scheduler: {type: hyperband}\n",
            "search.scheduler: expected {type: asha",
        ),
        (
            "  num_samples: 2\n  space: {SOLVER.BASE_LR: {uniform: [0.1, 0.2]}}\n  stopper: 3\n",
            "search: unknown key 'stopper'",
        ),
    ],
)
def test_bad_search_sections_name_the_file_and_key(tmp_path, body, expected):
    p = tmp_path / "s.yaml"
    p.write_text(BASE + body)
    with pytest.raises(GridError) as e:
        load_grid(p)
    assert "s.yaml: search" in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "  num_samples: 2\n  space: {SOLVER.BASE_LRR: {uniform: [0.1, 0.2]}}\n",
            "search.space.SOLVER.BASE_LRR: not a config key",
        ),
        (
            "  num_samples: 2\n  space: {MODEL.LOSS.TYPE: {choice: [OIM, LOIMM]}}\n",
            "search.space.MODEL.LOSS.TYPE: value 'LOIMM'",
        ),
        (
            "  num_samples: 2\n  space: {SOLVER.BASE_LR: {uniform: [0.1, 0.2]}}\n"
            "  scheduler: {type: asha, grace_period: 3}\n",
            "grace_period: 3 is not a multiple of EVAL_PERIOD=4",  # the smoke profile evaluates at its 4th, last epoch
        ),
    ],
)
def test_cli_rejects_a_search_that_cannot_run_before_anything_starts(tmp_path, body, expected):
    p = tmp_path / "s.yaml"
    p.write_text(BASE + body)
    r = subprocess.run(
        RUN + ["--grid", str(p), "--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
        check=False,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr


def test_cli_dry_run_shows_the_search_and_refuses_several_seeds(tmp_path):
    r = subprocess.run(
        RUN + ["--grid", "lr_eps", "--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "search: 8 samples of the configuration above, optuna sampling, maximising val_mAP; ASHA" in r.stdout
    assert "SOLVER.BASE_LR: loguniform[0.001, 0.05]" in r.stdout
    r = subprocess.run(
        RUN + ["--grid", "lr_eps", "--seeds", "3", "--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and "trains each sampled configuration once" in r.stderr


@pytest.mark.parametrize(
    "args, rc, expected",
    [
        (["--grid", "lr_eps", "--num-samples", "3"], 0, "search: 3 samples of the configuration above"),
        (["--grid", "lr_eps", "--num-samples", "0"], 2, "--num-samples 0: expected a positive integer"),
        (["--grid", "table3", "--num-samples", "3"], 2, "--num-samples: table3.yaml has no search: section"),
    ],
)
def test_cli_num_samples_overrides_the_grids(tmp_path, args, rc, expected):
    r = subprocess.run(
        RUN + args + ["--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
        check=False,
    )
    assert r.returncode == rc, r.stdout + r.stderr
    assert expected in (r.stdout if rc == 0 else r.stderr)
