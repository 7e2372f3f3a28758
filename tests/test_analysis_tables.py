"""make_tables against runs logged into a real (temporary) MLflow sqlite store."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from analysis.make_tables import make_table
from analysis.published import load_published
from oimnet.engine.tracking import RunLogger

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "analysis" / "make_tables.py")]

# row -> seed -> (mAP per epoch 1..2, final top1)
LOGGED = {
    ("OIMNet", 0, "OIMNet"): {1: ([0.10, 0.30], 0.5), 2: ([0.20, 0.40], 0.7)},
    ("OIMNet++", 1, "OIMNet++"): {1: ([0.25, 0.50], 0.8), 2: ([0.30, 0.56], 0.9)},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    parent = RunLogger.start(uri, "abl-test", run_name="sweep", tags={"grid": "micro"})
    for (row, idx, label), seeds in LOGGED.items():
        for seed, (maps, top1) in seeds.items():
            run = RunLogger.start(
                uri,
                "abl-test",
                run_name=f"{row} s{seed}",
                parent_run_id=parent.run_id,
                tags={"row": row, "row_index": str(idx), "paper_label": label, "seed": str(seed), "dataset": "prw"},
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
        tags={"row": "OIMNet++", "row_index": "1", "paper_label": "OIMNet++", "seed": "3", "dataset": "prw"},
    )
    failed.log_metrics({"mAP": 0.99, "top1": 0.99}, step=1)
    failed.end("FAILED")
    parent.end("FINISHED")
    return uri, parent.run_id


def test_published_file_is_the_spec_copy_all_secondary():
    pub = load_published()
    assert pub["OIMNet++"].values[("prw", "mAP")] == 46.8
    assert pub["OIMNet+++"].values[("cuhk", "top1")] == 94.1
    assert {p.verified for p in pub.values()} == {"secondary"}


def test_markdown_shows_mean_std_over_seeds_and_published_beside(store):
    uri, parent = store
    text, plots = make_table(parent_ids=[parent], tracking_uri=uri)
    assert plots == []
    lines = text.splitlines()
    assert (
        lines[0]
        == "| row | paper label | seeds | PRW mAP | PRW top-1 | PRW mAP (published†) | PRW top-1 (published†) |"
    )
    # OIMNet: mAP 30, 40 -> 35.0 ± 7.1; top-1 50, 70 -> 60.0 ± 14.1; no published value (OIM != OIMNet).
    assert lines[2] == "| OIMNet | OIMNet | 2 | 35.0 ± 7.1 | 60.0 ± 14.1 |  |  |"
    # OIMNet++: mAP 50, 56 -> 53.0 ± 4.2; top-1 80, 90 -> 85.0 ± 7.1; the FAILED seed-3 run is left out.
    assert lines[3] == "| OIMNet++ | OIMNet++ | 2 | 53.0 ± 4.2 | 85.0 ± 7.1 | 46.8† | 83.9† |"
    assert "secondary sources" in text and "Lee et al. ECCV 2022" in text
    assert "Left out (not FINISHED): 1 FAILED run(s)." in text


def test_all_metrics_csv_and_latex(store):
    uri, parent = store
    text, _ = make_table(parent_ids=[parent], tracking_uri=uri, fmt="csv", all_metrics=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["row"] for r in rows] == ["OIMNet", "OIMNet++"]
    assert float(rows[1]["mAP_pct_mean"]) == pytest.approx(53.0)
    assert float(rows[1]["mAP_pct_std"]) == pytest.approx(4.2426, abs=1e-3)
    assert float(rows[0]["det_recall_pct_mean"]) == pytest.approx(70.0)
    assert float(rows[0]["top10_pct_mean"]) == pytest.approx(97.0)
    assert rows[0]["published_mAP_pct"] == "" and rows[1]["published_mAP_pct"] == "46.8"
    tex, _ = make_table(parent_ids=[parent], tracking_uri=uri, fmt="latex")
    assert r"OIMNet++ & OIMNet++ & 2 & 53.0 $\pm$ 4.2 & 85.0 $\pm$ 7.1 & 46.8$^\dagger$ & 83.9$^\dagger$ \\" in tex
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
    assert "| OIMNet++ | OIMNet++ | 2 | 53.0 ± 4.2 | 85.0 ± 7.1 | 46.8† | 83.9† |" in text
    r = subprocess.run(CLI + ["--parent", "0123abc"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "--parent 0123abc: no such MLflow run" in r.stderr
