"""Synthetic world: round trips through both loaders, data.check counts,
determinism, and safe generation on first use."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from oimnet.data import ensure_synthetic, load_cuhk_protocol, load_records, num_train_ids
from oimnet.data.synth import generate, read_meta

SMALL = {"seed": 5, "identities": 10, "frames": 30, "size": "96x72"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_json(dataset, root):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "oimnet.data.check", "--dataset", dataset, "--root", root, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    return {fmt: (str(base / fmt), generate(str(base / fmt), fmt, **SMALL)) for fmt in ("prw", "cuhk")}


def test_prw_round_trip(worlds):
    root, meta = worlds["prw"]
    train, gallery, query = (load_records("PRW", root, s) for s in ("train", "gallery", "query"))
    counts = meta["counts"]
    assert len(train) == counts["train"]["images"] and len(gallery) == counts["gallery"]["images"]
    assert len(query) == counts["query"]["images"] > 0
    assert sum(len(r["pids"]) for r in train) == counts["train"]["boxes"]
    train_ids = {int(p) for r in train for p in r["pids"] if p != 5555}
    test_ids = {int(p) for r in gallery for p in r["pids"] if p != 5555}
    assert train_ids == set(range(1, num_train_ids("PRW", root) + 1))  # contiguous 1..L
    assert not train_ids & test_ids  # query identities absent from training
    for q in query:  # each query is a labelled box of its frame, found elsewhere in the gallery too
        frame = next(r for r in gallery if r["img_name"] == q["img_name"])
        assert int(q["pids"][0]) in frame["pids"].tolist()
        assert sum(int(q["pids"][0]) in r["pids"].tolist() for r in gallery) >= 2
    for r in train + gallery:
        assert os.path.isfile(r["img_path"]) and set(np.unique(r["cam_id"])) <= set(range(1, 7))
        assert (r["boxes"][:, 2] > r["boxes"][:, 0]).all() and (r["boxes"][:, 3] > r["boxes"][:, 1]).all()
        assert 2 <= len(r["pids"]) <= 6


def test_cuhk_round_trip(worlds):
    root, meta = worlds["cuhk"]
    train, gallery, query = (load_records("CUHK-SYSU", root, s) for s in ("train", "gallery", "query"))
    assert len(train) == meta["counts"]["train"]["images"] and len(gallery) == meta["counts"]["gallery"]["images"]
    assert sorted(r["img_name"] for r in train) == [r["img_name"] for r in train]
    assert num_train_ids("CUHK-SYSU", root) == meta["train_ids"]
    assert [int(q["pids"][0]) for q in query] == list(range(1, len(query) + 1))
    proto = load_cuhk_protocol(root, 50)
    assert len(proto) == len(query)
    for q, entries in zip(query, proto):
        assert q["img_name"] not in [e["img_name"] for e in entries]
        found = [e for e in entries if e["box"] is not None]
        assert found and entries[: len(found)] == found  # positives first
        for e in found:  # every positive box is a gallery box labelled with the query's pid
            rec = next(r for r in gallery if r["img_name"] == e["img_name"])
            assert any(np.array_equal(b, e["box"]) and p == q["pids"][0] for b, p in zip(rec["boxes"], rec["pids"]))
    full = load_cuhk_protocol(root, -1)
    assert all(len(entries) == len(gallery) - 1 for entries in full)


@pytest.mark.parametrize("fmt,dataset", [("prw", "PRW"), ("prw", "synthetic"), ("cuhk", "CUHK-SYSU")])
def test_check_reports_generator_counts(worlds, fmt, dataset):
    root, meta = worlds[fmt]
    rc, report = _check_json(dataset, root)
    assert rc == 0 and report["problem_count"] == 0
    for split in ("train", "gallery", "query"):
        assert report[split] == meta["counts"][split]


def test_check_lists_missing_files(tmp_path):
    root = str(tmp_path / "w")
    generate(root, "prw", **{**SMALL, "frames": 12})
    frames = sorted(os.listdir(os.path.join(root, "frames")))
    for name in frames[:3]:
        os.remove(os.path.join(root, "frames", name))
    os.remove(os.path.join(root, "annotations", frames[3] + ".mat"))
    rc, report = _check_json("PRW", root)
    assert rc == 1 and report["problem_count"] == 4
    assert any(f"annotations/{frames[3]}.mat: file not found" in p for p in report["problems"])
    assert sum("image file missing" in p for p in report["problems"]) == 3
    os.remove(os.path.join(root, "frame_train.mat"))
    rc, report = _check_json("PRW", root)
    assert rc == 1 and "frame_train.mat: file not found" in report["problems"][0]


def test_check_lists_truncated_and_corrupt_jpegs(tmp_path):
    root = str(tmp_path / "w")
    generate(root, "prw", **{**SMALL, "frames": 12})
    frames = sorted(os.listdir(os.path.join(root, "frames")))
    truncated, corrupt = (os.path.join(root, "frames", n) for n in frames[:2])
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])  # a download cut off half way
    with open(corrupt, "wb") as f:
        f.write(b"<html>404 not found</html>")
    rc, report = _check_json("PRW", root)
    assert rc == 1 and report["problem_count"] == 2
    assert any(p.startswith(f"frames/{frames[0]}: unreadable image") and "truncated" in p for p in report["problems"])
    assert any(p.startswith(f"frames/{frames[1]}: unreadable image") for p in report["problems"])
    text = subprocess.run(
        [sys.executable, "-m", "oimnet.data.check", "--dataset", "PRW", "--root", root],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert text.returncode == 1 and "no problems found" not in text.stdout and frames[0] in text.stdout


def test_generation_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    settings = {**SMALL, "frames": 8}
    generate(a, "prw", **settings)
    generate(b, "prw", **settings)
    for name in sorted(os.listdir(os.path.join(a, "frames"))):
        with open(os.path.join(a, "frames", name), "rb") as fa, open(os.path.join(b, "frames", name), "rb") as fb:
            assert fa.read() == fb.read(), name
    for name in sorted(os.listdir(os.path.join(a, "annotations"))):  # .mat headers hold a timestamp
        ma, mb = (scipy.io.loadmat(os.path.join(d, "annotations", name)) for d in (a, b))
        assert {k: v.tolist() for k, v in ma.items() if not k.startswith("__")} == {
            k: v.tolist() for k, v in mb.items() if not k.startswith("__")
        }, name
    with open(os.path.join(a, "query_info.txt"), "rb") as fa, open(os.path.join(b, "query_info.txt"), "rb") as fb:
        assert fa.read() == fb.read()
    c = str(tmp_path / "c")
    generate(c, "prw", **{**settings, "seed": 6})
    ra, rc = load_records("PRW", a, "train"), load_records("PRW", c, "train")
    assert [r["boxes"].tolist() for r in ra] != [r["boxes"].tolist() for r in rc]


def _ensure(root):
    ensure_synthetic(root, **{**SMALL, "frames": 12})
    return read_meta(root)["settings"]


def test_concurrent_first_use_generates_once(tmp_path):
    root = str(tmp_path / "synthetic-world")
    with mp.get_context("spawn").Pool(2) as pool:
        metas = pool.map(_ensure, [root, root])
    assert metas[0] == metas[1] and metas[0]["frames"] == 12
    assert sorted(os.listdir(tmp_path)) == [".synthetic-world.lock", "synthetic-world"]  # no temp dirs left
    assert len(load_records("synthetic", root, "train")) == read_meta(root)["counts"]["train"]["images"]


def test_synthetic_dataset_generates_on_first_use(tmp_path):
    root = str(tmp_path / "fresh")
    os.makedirs(root)  # an empty folder counts as "no dataset yet"
    recs = load_records("synthetic", root, "gallery", synth_kwargs={**SMALL, "frames": 10})
    assert recs and read_meta(root)["settings"]["frames"] == 10
    with pytest.warns(UserWarning, match="other settings"):
        ensure_synthetic(root, frames=11)


def test_synth_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = str(tmp_path / "cli")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "oimnet.data.synth",
            "--format",
            "prw",
            "--out",
            out,
            "--seed",
            "2",
            "--identities",
            "6",
            "--frames",
            "20",
            "--size",
            "80x64",
            "--annotations-only",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["train"]["images"] == 12
    assert len(os.listdir(os.path.join(out, "annotations"))) == 20 and not os.listdir(os.path.join(out, "frames"))
    bad = subprocess.run(
        [sys.executable, "-m", "oimnet.data.synth", "--format", "prw", "--out", out, "--size", "80"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr
    text = subprocess.run(
        [sys.executable, "-m", "oimnet.data.check", "--dataset", "PRW", "--root", out],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert text.returncode == 1 and "20 problem(s)" in text.stdout and "image file missing" in text.stdout


def test_synthetic_rejects_cuhk_format_root(worlds):
    with pytest.raises(ValueError, match="load this one as 'CUHK-SYSU'"):
        load_records("synthetic", worlds["cuhk"][0], "train")
