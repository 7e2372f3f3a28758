"""make_tables against runs logged into a real (temporary) MLflow sqlite store."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats

from analysis.make_tables import make_table
from analysis.published import load_published
from oimnet.engine.tracking import RunLogger

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "analysis" / "make_tables.py")]

OIMNET = {
    "MODEL.ROI_HEAD.NORM_TYPE": "none",
    "MODEL.LOSS.TYPE": "OIM",
    "MODEL.LOSS.OIM_EPS": 0.1,
    "MODEL.ROI_HEAD.AUGMENT": False,
}
OIMNETPP = {**OIMNET, "MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.LOSS.TYPE": "LOIM"}
# (row, row_index, paper_label, params) -> seed -> (mAP at epochs 1..2, final top1)
LOGGED = {
    ("OIMNet", 0, "OIMNet", "oim"): {1: ([0.10, 0.30], 0.5), 2: ([0.20, 0.40], 0.7), 3: ([0.2, 0.35], 0.6)},
    ("OIMNet++", 1, "OIMNet++", "pp"): {1: ([0.25, 0.50], 0.8), 2: ([0.30, 0.56], 0.9), 3: ([0.3, 0.52], 0.7)},
    # tagged OIMNet++ but trained with eps 0.2 (a --set on one trial): must not be pooled
    ("OIMNet++", 1, "OIMNet++", "pp-eps0.2"): {4: ([0.5, 0.9], 0.95)},
}
PARAMS = {"oim": OIMNET, "pp": OIMNETPP, "pp-eps0.2": {**OIMNETPP, "MODEL.LOSS.OIM_EPS": 0.2}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    parent = RunLogger.start(uri, "abl-test", run_name="sweep", tags={"grid": "micro"})
    for (row, idx, label, kind), seeds in LOGGED.items():
        for seed, (maps, top1) in seeds.items():
            run = RunLogger.start(
                uri,
                "abl-test",
                run_name=f"{row} s{seed}",
                parent_run_id=parent.run_id,
                tags={"row": row, "row_index": str(idx), "paper_label": label, "seed": str(seed), "dataset": "prw"},
            )
            # as train_run logs them: the whole flat config, seeds and paths included
            run.log_params(
                {
                    **PARAMS[kind],
                    "SEED": seed,
                    "SEED_USED": seed,
                    "OUTPUT_DIR": f"/tmp/x/{row}-{seed}",
                    "MLFLOW.RUN_NAME": f"{row} s{seed}",
                    "SOLVER.BASE_LR": 0.02,
                }
            )
            for epoch, m in enumerate(maps, start=1):
                run.log_metrics(
                    {
                        "mAP": m,
                        "top1": top1 - 0.1 * (2 - epoch),
                        "det_ap": 0.6,
                        "det_recall": 0.7,
                        "top5": 0.95,
                        "top10": 0.97,
                    },
                    step=epoch,
                )
            run.end("FINISHED")
    failed = RunLogger.start(
        uri,
        "abl-test",
        parent_run_id=parent.run_id,
        tags={"row": "OIMNet++", "row_index": "1", "paper_label": "OIMNet++", "seed": "5", "dataset": "prw"},
    )
    failed.log_metrics({"mAP": 0.99, "top1": 0.99}, step=1)
    failed.end("FAILED")
    parent.end("FINISHED")
    return uri, parent.run_id


def _ci(values):
    import numpy as np

    x = np.array(values) * 100
    return stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))


def test_published_file_is_the_spec_copy_all_secondary():
    pub = load_published()
    assert pub["OIMNet++"].values[("prw", "mAP")] == 46.8
    assert pub["OIMNet+++"].values[("cuhk", "top1")] == 94.1
    assert {p.verified for p in pub.values()} == {"secondary"}


def test_markdown_intervals_paired_tests_and_the_mislabelled_run(store):
    uri, parent = store
    text, plots = make_table(parent_ids=[parent], tracking_uri=uri)
    assert plots == []
    lines = text.splitlines()
    assert lines[0] == (
        "| row | paper label | config | seeds | PRW mAP | PRW top-1 | PRW mAP Δ vs OIMNet | "
        "PRW top-1 Δ vs OIMNet | PRW mAP (published†) | PRW top-1 (published†) |"
    )
    lo, hi = _ci([0.30, 0.40, 0.35])
    # config: only the keys that differ between runs (not seeds, paths, run names, nor the shared lr)
    assert lines[2] == (
        f"| OIMNet | OIMNet | LOSS.OIM_EPS=0.1 LOSS.TYPE=OIM ROI_HEAD.NORM_TYPE=none | 3 | "
        f"35.0 ± 5.0 [{lo:.1f}, {hi:.1f}] | 60.0 ± 10.0 [35.2, 84.8] | (baseline) | (baseline) |  |  |"
    )
    # OIMNet++ pools seeds 1-3 only: the eps=0.2 run and the FAILED run are not in it.
    p_map = stats.ttest_rel([0.50, 0.56, 0.52], [0.30, 0.40, 0.35]).pvalue
    p_top1 = stats.ttest_rel([0.8, 0.9, 0.7], [0.5, 0.7, 0.6]).pvalue
    row = lines[3].split(" | ")
    assert row[0] == "| OIMNet++" and row[3] == "3"
    assert row[4].startswith("52.7 ± 3.1 [")
    assert row[6].startswith("+17.7 [") and row[6].endswith(f"p={p_map:.3f}")
    assert row[7].startswith("+20.0 [") and row[7].endswith(f"p={p_top1:.3f}")
    assert row[8:] == ["46.8†", "83.9† |"]
    # the mislabelled run: its own row, flagged with the key that differs, no published value
    assert lines[4] == (
        "| OIMNet++ ⚠ OIM_EPS=0.2 |  | LOSS.OIM_EPS=0.2 LOSS.TYPE=LOIM ROI_HEAD.NORM_TYPE=protonorm | 1 | "
        "90.0 | 95.0 | – | – |  |  |"
    )
    assert (
        "⚠ OIMNet++ ⚠ OIM_EPS=0.2 (run" in text
        and "MODEL.LOSS.OIM_EPS=0.2 (they have 0.1)" in text
        and "shown apart, not pooled, no published value" in text
    )
    # the sentence: mAP significant (p = 0.005), top-1 not (p = 0.074)
    assert p_map < 0.05 < p_top1
    assert (
        "PRW: at the 5% level (two-sided paired t-test over shared seeds), these differ significantly "
        f"from OIMNet: OIMNet++ in mAP (+17.7 points, p={p_map:.3f}, 3 seeds); no other row/metric does."
    ) in text
    assert "secondary sources" in text and "Lee et al. ECCV 2022" in text
    assert "Left out (not FINISHED): 1 FAILED run(s)." in text


def test_one_seed_says_nothing_can_be_concluded(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = RunLogger.start(uri, "one-seed", run_name="sweep")
    for row, idx, params, m in (("OIMNet", 0, OIMNET, 0.3), ("OIMNet++", 1, OIMNETPP, 0.6)):
        run = RunLogger.start(
            uri,
            "one-seed",
            parent_run_id=parent.run_id,
            tags={"row": row, "row_index": str(idx), "paper_label": row, "seed": "1", "dataset": "synthetic"},
        )
        run.log_params({**params, "SEED": 1})
        run.log_metrics({"mAP": m, "top1": m, "val_mAP": m / 2}, step=1)
        run.end("FINISHED")
    text, _ = make_table(parent_ids=[parent.run_id], tracking_uri=uri)
    assert "Δ vs" not in text and "p=" not in text
    # trained with a validation split: the test numbers, with the validation mAP beside them
    assert (
        text.splitlines()[0]
        == "| row | paper label | config | seeds | Synthetic mAP | Synthetic val mAP | Synthetic top-1 |"
    )
    assert "val mAP: the identity-disjoint validation split" in text
    assert "One seed per row: no intervals and no tests, so nothing can be concluded" in text
    assert "| OIMNet++ | OIMNet++ | LOSS.TYPE=LOIM ROI_HEAD.NORM_TYPE=protonorm | 1 | 60.0 | 30.0 | 60.0 |" in text


def test_paper_label_contradicted_by_params_gets_no_published_value(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = RunLogger.start(uri, "contra", run_name="sweep")
    for seed in (1, 2):  # every OIMNet++ run of the sweep trained with eps 0.2 (--set for the whole sweep)
        run = RunLogger.start(
            uri,
            "contra",
            parent_run_id=parent.run_id,
            tags={"row": "OIMNet++", "row_index": "0", "paper_label": "OIMNet++", "seed": str(seed), "dataset": "prw"},
        )
        run.log_params({**OIMNETPP, "MODEL.LOSS.OIM_EPS": 0.2, "SEED": seed})
        run.log_metrics({"mAP": 0.4 + seed / 100, "top1": 0.5}, step=1)
        run.end("FINISHED")
    text, _ = make_table(parent_ids=[parent.run_id], tracking_uri=uri)
    assert "published†" not in text
    assert "| OIMNet++ ⚠ |  |" in text
    assert "params contradict paper label 'OIMNet++': MODEL.LOSS.OIM_EPS=0.2 (the method has 0.1)" in text


def test_all_metrics_csv_and_latex(store):
    uri, parent = store
    text, _ = make_table(parent_ids=[parent], tracking_uri=uri, fmt="csv", all_metrics=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["row"] for r in rows] == ["OIMNet", "OIMNet++", "OIMNet++ ⚠ OIM_EPS=0.2"]
    assert float(rows[1]["mAP_pct_mean"]) == pytest.approx(52.6667, abs=1e-3)
    assert float(rows[1]["mAP_pct_std"]) == pytest.approx(3.0551, abs=1e-3)
    lo, hi = _ci([0.50, 0.56, 0.52])
    assert float(rows[1]["mAP_pct_ci95_low"]) == pytest.approx(lo, abs=1e-3)
    assert float(rows[1]["mAP_pct_ci95_high"]) == pytest.approx(hi, abs=1e-3)
    assert float(rows[1]["mAP_diff_p"]) == pytest.approx(
        stats.ttest_rel([0.50, 0.56, 0.52], [0.30, 0.40, 0.35]).pvalue, rel=1e-4
    )
    assert rows[1]["mAP_diff_n_seeds"] == "3"
    assert rows[2]["flag"].startswith("params differ from the other runs labelled 'OIMNet++'")
    assert float(rows[0]["det_recall_pct_mean"]) == pytest.approx(70.0)
    assert float(rows[0]["top10_pct_mean"]) == pytest.approx(97.0)
    assert rows[0]["published_mAP_pct"] == "" and rows[1]["published_mAP_pct"] == "46.8"
    assert rows[2]["published_mAP_pct"] == ""
    tex, _ = make_table(parent_ids=[parent], tracking_uri=uri, fmt="latex")
    assert r"46.8$^\dagger$ & 83.9$^\dagger$ \\" in tex
    assert r"52.7 $\pm$ 3.1 [" in tex
    assert tex.startswith(r"\begin{tabular}")


def test_plots_are_written(store, tmp_path):
    uri, parent = store
    _, plots = make_table(parent_ids=[parent], tracking_uri=uri, plots_dir=tmp_path)
    assert sorted(p.name for p in plots) == ["map_per_epoch_prw.png", "table_prw.png"]
    for p in plots:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400
            # not a blank canvas
            assert len(set(im.convert("L").getdata())) > 10


def test_cli_reads_mlflow_tracking_uri_and_experiment(store, tmp_path):
    uri, parent = store
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    r = subprocess.run(
        CLI + ["--experiment", "abl-test", "--out", str(tmp_path / "t.md")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "t.md").read_text()
    assert (
        "| OIMNet++ | OIMNet++ | LOSS.OIM_EPS=0.1 LOSS.TYPE=LOIM ROI_HEAD.NORM_TYPE=protonorm | 3 | 52.7 ± 3.1" in text
    )
    r = subprocess.run(CLI + ["--parent", "0123abc"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "--parent 0123abc: no such MLflow run" in r.stderr
