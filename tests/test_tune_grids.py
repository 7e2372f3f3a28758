"""Grid files: validation messages, expansion, and the RUN's --dry-run."""

import subprocess
from pathlib import Path

import pytest

from tests.sweep_driver import RUN, driver_env
from tune.grids import GridError, expand, load_grid, resolve_grid_path

ROOT = Path(__file__).resolve().parents[1]

TABLE3_ROWS = {
    "OIMNet": ("none", "OIM", False),
    "OIMNet + BN": ("batchnorm", "OIM", False),
    "OIMNet + ProtoNorm": ("protonorm", "OIM", False),
    "OIMNet + LOIM": ("none", "LOIM", False),
    "OIMNet + BN + LOIM": ("batchnorm", "LOIM", False),
    "OIMNet++": ("protonorm", "LOIM", False),
    "OIMNet+++": ("protonorm", "LOIM", True),
}


def _write(tmp_path, text, name="my.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_table3_rows_and_seeds_expand_to_the_ablation():
    trials = expand(load_grid(resolve_grid_path("table3")), dataset="synthetic", profile="smoke", seeds=[1, 2, 3])
    assert len(trials) == 7 * 3
    assert [t.row for t in trials[::3]] == list(TABLE3_ROWS)
    for t in trials:
        norm, loss, augment = TABLE3_ROWS[t.row]
        assert (
            t.get("MODEL.ROI_HEAD.NORM_TYPE"),
            t.get("MODEL.LOSS.TYPE"),
            t.get("MODEL.ROI_HEAD.AUGMENT"),
        ) == (norm, loss, augment)
        assert t.get("INPUT.DATASET") == "synthetic"
        assert t.get("MODEL.BACKBONE.NAME") == "tiny"
        # make run's budget: val and test once, at the end, no ground-truth-box pass
        assert t.get("EVAL_PERIOD") == t.get("SOLVER.MAX_EPOCHS") and t.get("EVAL_GT_AT_END") is False
    assert sorted({(t.row, t.seed) for t in trials}) == sorted((r, s) for r in TABLE3_ROWS for s in (1, 2, 3))
    assert len({t.key for t in trials}) == len(trials)
    assert {t.get("SEED") for t in trials} == {1, 2, 3}
    labels = {t.row: t.paper_label for t in trials}
    assert labels["OIMNet++"] == "OIMNet++" and labels["OIMNet+++"] == "OIMNet+++"


def test_paper_profile_on_prw_is_the_authors_recipe():
    t = expand(load_grid(resolve_grid_path("table3")), dataset="prw", profile="paper", seeds=[1])[-1]
    assert t.get("MODEL.BACKBONE.NAME") == "resnet50"
    assert (t.get("INPUT.MIN_SIZE"), t.get("INPUT.MAX_SIZE"), t.get("INPUT.BATCH_SIZE_TRAIN")) == (
        900,
        1500,
        5,
    )
    assert (t.get("SOLVER.MAX_EPOCHS"), t.get("SOLVER.BASE_LR"), t.get("SOLVER.LR_DECAY_MILESTONES")) == (
        20,
        0.003,
        [16],
    )
    assert (t.get("MODEL.LOSS.LUT_SIZE"), t.get("MODEL.LOSS.CQ_SIZE")) == (482, 500)
    assert t.get("INPUT.DATASET") == "PRW"


def test_eps_grid_sweeps_oim_eps_on_oimnetpp():
    trials = expand(load_grid(resolve_grid_path("eps")), dataset="synthetic", profile="smoke", seeds=[1])
    assert [t.get("MODEL.LOSS.OIM_EPS") for t in trials] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert {t.get("MODEL.LOSS.TYPE") for t in trials} == {"LOIM"}
    assert [t.paper_label for t in trials] == ["", "", "OIMNet++", "", ""]


def test_axes_are_crossed_with_rows_and_override_them(tmp_path):
    g = _write(
        tmp_path,
        """
rows:
  - {name: A, overrides: {MODEL.LOSS.TYPE: OIM}}
  - {name: B, overrides: {MODEL: {LOSS: {TYPE: LOIM}}}}
axes:
  MODEL.LOSS.OIM_EPS: [0.0, 0.2]
  SOLVER.BASE_LR: [0.01]
""",
    )
    trials = expand(load_grid(g), dataset="synthetic", profile="smoke", seeds=[1, 2], extra={"SOLVER.MAX_EPOCHS": 1})
    assert [t.row for t in trials[::2]] == [
        "A OIM_EPS=0.0 BASE_LR=0.01",
        "A OIM_EPS=0.2 BASE_LR=0.01",
        "B OIM_EPS=0.0 BASE_LR=0.01",
        "B OIM_EPS=0.2 BASE_LR=0.01",
    ]
    assert [t.get("MODEL.LOSS.OIM_EPS") for t in trials[::2]] == [0.0, 0.2, 0.0, 0.2]
    assert [t.get("MODEL.LOSS.TYPE") for t in trials[::2]] == ["OIM", "OIM", "LOIM", "LOIM"]
    assert {t.get("SOLVER.MAX_EPOCHS") for t in trials} == {1}
    assert [t.row_index for t in trials[::2]] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "rows:\n  - {name: OIMNet++, overrides: {MODEL.LOSS.TPYE: LOIM}}\n",
            "row 'OIMNet++': MODEL.LOSS.TPYE: unknown key; did you mean MODEL.LOSS.TYPE?",
        ),
        (
            "rows:\n  - {name: X, overrides: {MODEL.ROI_HEAD.NORM_TYPE: layernorm}}\n",
            "row 'X': MODEL.ROI_HEAD.NORM_TYPE: invalid value 'layernorm'; expected one of: none, batchnorm, protonorm",
        ),
        (
            "rows:\n  - {name: X}\naxes:\n  MODEL.LOSS.OIM_EPS: [0.1, 0.9]\n",
            "row 'X OIM_EPS=0.9': MODEL.LOSS.OIM_EPS: invalid value 0.9; expected a number in [0.0, 0.3]",
        ),
        (
            "fixed: {SOLVER.MAX_EPOCHS: 0}\nrows:\n  - {name: X}\n",
            "fixed: SOLVER.MAX_EPOCHS: invalid value 0; expected a positive integer",
        ),
        (
            "profiles: {smoke: {INPUT.MIN_SIZ: 10}}\nrows:\n  - {name: X}\n",
            "profile 'smoke': INPUT.MIN_SIZ: unknown key; did you mean INPUT.MIN_SIZE?",
        ),
        ("rows:\n  - {name: X}\n  - {name: X}\n", "row 'X': duplicate row name"),
        ("rows:\n  - {name: X, overide: {}}\n", "rows[0]: unknown key 'overide'"),
        ("rowz: []\n", "unknown top-level key 'rowz'"),
        ("seeds: 0\nrows:\n  - {name: X}\n", "seeds: expected a positive integer (seeds 1..N per row), got 0"),
        ("rows: []\n", "no rows and no axes"),
        (
            "rows:\n  - {name: X}\naxes:\n  MODEL.LOSS.OIM_EPS: 0.1\n",
            "axes.MODEL.LOSS.OIM_EPS: expected a non-empty list",
        ),
    ],
)
def test_bad_grid_messages_name_the_file_and_row(tmp_path, body, expected):
    g = _write(tmp_path, body)
    with pytest.raises(GridError) as e:
        expand(load_grid(g), dataset="synthetic", profile="smoke", seeds=[1])
    assert str(e.value).startswith(str(g))
    assert expected in str(e.value)


def test_unknown_grid_name_lists_the_shipped_grids():
    with pytest.raises(GridError, match="available: eps, lr_eps, methods, micro, table3"):
        resolve_grid_path("tabel3")


def test_cli_bad_grid_exits_2_with_the_message_before_anything_runs(tmp_path):
    g = _write(tmp_path, "rows:\n  - {name: OIMNet++, overrides: {MODEL.LOSS.TPYE: LOIM}}\n")
    storage = tmp_path / "rr"
    r = subprocess.run(
        RUN + ["--grid", str(g), "--storage", str(storage)],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"error: {g}: row 'OIMNet++': MODEL.LOSS.TPYE: unknown key; did you mean MODEL.LOSS.TYPE?"
    )
    assert not storage.exists()  # nothing started


def test_cli_dry_run_prints_every_row_and_seed(tmp_path):
    r = subprocess.run(
        RUN + ["--grid", "table3", "--seeds", "2", "--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "14 trials" in lines[0]
    table = [ln for ln in lines if ln.startswith("r0")]
    assert len(table) == 14
    for row, (norm, loss, augment) in TABLE3_ROWS.items():
        for seed in (1, 2):
            hits = [
                ln
                for ln in table
                if f"  {row}  " in ln
                and f"  {seed}  " in ln
                and f"MODEL.ROI_HEAD.NORM_TYPE={norm} MODEL.LOSS.TYPE={loss} MODEL.ROI_HEAD.AUGMENT={augment}" in ln
            ]
            assert len(hits) == 1, (row, seed)
    assert all(ln.rstrip().endswith("cpu=1 (cpu)") for ln in table)
    assert not (tmp_path / "rr").exists()


def test_cli_seeds_default_to_the_grids_seeds(tmp_path):
    """table3 says `seeds: 2` (what `make run` runs: paired tests need several seeds); --seeds overrides it."""
    assert load_grid(resolve_grid_path("table3")).seeds == 2
    assert load_grid(resolve_grid_path("eps")).seeds == 1
    r = subprocess.run(
        RUN + ["--grid", "table3", "--dry-run", "--storage", str(tmp_path / "rr")],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "seeds [1, 2]: 14 trials" in r.stdout.splitlines()[0]


def test_cli_paper_profile_without_gpu_states_time_and_needs_force(tmp_path):
    r = subprocess.run(
        RUN
        + [
            "--grid",
            "table3",
            "--dataset",
            "prw",
            "--data-root",
            str(tmp_path),
            "--profile",
            "paper",
            "--storage",
            str(tmp_path / "rr"),
        ],
        capture_output=True,
        text=True,
        env=driver_env(),
        timeout=120,
    )
    assert r.returncode == 2
    assert "14 trials x 20 epochs x 5704 training images" in r.stderr  # table3's 2 seeds x 7 rows
    assert "hours" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "rr").exists()
