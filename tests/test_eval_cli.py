"""python -m oimnet.evaluate on a generated synthetic dataset with a random cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from oimnet.data import load_cuhk_protocol, load_records
from oimnet.data.synth import generate
from oimnet.eval import evaluate_cache, save_cache
from oimnet.eval.fake import random_cache
from oimnet.evaluate import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval_cli")
    out = {}
    for fmt, ds in (("prw", "PRW"), ("cuhk", "CUHK-SYSU")):
        root = str(base / fmt)
        generate(root, fmt, annotations_only=True, frames=120, identities=20)
        gallery, query = load_records(ds, root, "gallery"), load_records(ds, root, "query")
        cache_path = base / f"{fmt}_cache.pth"
        save_cache(cache_path, random_cache(gallery, query, seed=1))
        out[ds] = (root, str(cache_path), gallery, query)
    return out


def test_json_output_matches_evaluate_cache_prw(worlds, capsys, tmp_path):
    root, cache_path, gallery, query = worlds["PRW"]
    out_json = tmp_path / "res" / "results.json"
    rc = main(
        [
            "--cache",
            cache_path,
            "--json",
            "--out",
            str(out_json),
            "INPUT.DATASET",
            "PRW",
            "INPUT.DATA_ROOT",
            root,
            "EVAL_USE_CBGM",
            "True",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    from oimnet.eval import load_cache

    cfg = OmegaConf.create({"INPUT": {"DATASET": "PRW"}, "EVAL_USE_CBGM": True})
    want = evaluate_cache(cfg, load_cache(cache_path), gallery, query)
    for k in ("det_ap", "det_recall", "mAP", "top1", "top5", "top10", "mAP_multiview"):
        assert 0.0 <= printed[k] <= 1.0
        assert printed[k] == want[k]
    assert printed["use_cbgm"] is True and "per_query" not in printed
    full = json.loads(out_json.read_text())
    assert len(full["per_query"]) == len(query)
    first = full["per_query"][0]
    assert set(first) >= {"img_name", "box", "ap", "top10"}
    assert set(first["top10"][0]) == {"img_name", "box", "score", "correct"}


def _cuhk_json(capsys, cache_path: str, root: str, gallery_size: int) -> dict:
    """What `oimnet.evaluate --cache ... --json` prints for CUHK-SYSU at one gallery size."""
    args = ["--cache", cache_path, "--json", "INPUT.DATASET", "CUHK-SYSU", "INPUT.DATA_ROOT", root]
    assert main(args + ["EVAL_GALLERY_SIZE", str(gallery_size)]) == 0
    return json.loads(capsys.readouterr().out)


def test_table_output_cuhk_with_gallery_size(worlds, capsys):
    from oimnet.eval import load_cache

    root, cache_path, gallery, query = worlds["CUHK-SYSU"]
    assert (
        main(["--cache", cache_path, "INPUT.DATASET", "CUHK-SYSU", "INPUT.DATA_ROOT", root, "EVAL_GALLERY_SIZE", "50"])
        == 0
    )
    text = capsys.readouterr().out
    assert "gallery size 50" in text and "mAP" in text and "%" in text
    printed = _cuhk_json(capsys, cache_path, root, 50)
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": 50})
    want = evaluate_cache(cfg, load_cache(cache_path), gallery, query, load_cuhk_protocol(root, 50))
    assert printed["gallery_size"] == 50 and printed["mAP"] == want["mAP"]
    # The full set is scored from the records' test pids, equal to its explicit per-query lists.
    printed = _cuhk_json(capsys, cache_path, root, -1)
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": -1})
    # queries with the release's dummy pid force the per-query-list path
    dummy = [{**q, "pids": q["pids"] * 0 - 100} for q in query]
    explicit = evaluate_cache(cfg, load_cache(cache_path), gallery, dummy, load_cuhk_protocol(root, -1))
    assert printed["gallery_size"] == -1 and printed["mAP"] == explicit["mAP"] and printed["top1"] == explicit["top1"]


def test_module_entry_point(worlds):
    root, cache_path, _, _ = worlds["PRW"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "oimnet.evaluate",
            "--cache",
            cache_path,
            "--json",
            "INPUT.DATASET",
            "PRW",
            "INPUT.DATA_ROOT",
            root,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)) >= {"det_ap", "det_recall", "mAP", "top1", "top5", "top10"}


def exit_code_and_stderr(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_usage_errors_exit_2_with_a_clear_message(worlds, capsys, tmp_path):
    root, _, _, _ = worlds["PRW"]
    # a cache of another dataset: the message names the cache and the mismatch
    cuhk_cache = worlds["CUHK-SYSU"][1]
    code, err = exit_code_and_stderr(capsys, ["--cache", cuhk_cache, "INPUT.DATASET", "PRW", "INPUT.DATA_ROOT", root])
    assert code == 2 and cuhk_cache in err and "entries but the" in err
    code, err = exit_code_and_stderr(capsys, ["--cache", str(tmp_path / "none.pth"), "INPUT.DATASET", "PRW"])
    assert code == 2 and "none.pth: no such file" in err
    code, err = exit_code_and_stderr(capsys, ["INPUT.DATASET", "PRW"])
    assert code == 2 and "--cache" in err
    code, err = exit_code_and_stderr(
        capsys, ["--cache", worlds["PRW"][1], "INPUT.DATASET", "PRW", "INPUT.DATA_ROOT", str(tmp_path / "no_dataset")]
    )
    assert code == 2 and "no_dataset" in err


def test_cache_with_an_image_without_detections_is_rescored(worlds, tmp_path, capsys):
    """What the trainer writes when the model finds nothing in a gallery
    image: a (0, 5) float32 array, which protocol-2 pickles call bytes() for."""
    import numpy as np

    from oimnet.eval import dataset_identity

    root, _, gallery, query = worlds["PRW"]
    cache = random_cache(gallery, query, seed=2)
    dim = cache["gallery_feats"][1].shape[1]
    cache["gallery_dets"][0] = np.zeros((0, 5), np.float32)
    cache["gallery_feats"][0] = np.zeros((0, dim), np.float32)
    path = tmp_path / "eval_cache.pth"
    save_cache(path, cache, dataset_identity("PRW", gallery, query))
    assert main(["--cache", str(path), "--json", "INPUT.DATASET", "PRW", "INPUT.DATA_ROOT", root]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["mAP"] <= 1.0


def test_cache_of_another_dataset_with_same_sizes_is_refused(worlds, tmp_path, capsys):
    import shutil

    import scipy.io

    from oimnet.eval import dataset_identity

    root, _, gallery, query = worlds["PRW"]
    other = str(tmp_path / "other")
    shutil.copytree(root, other)
    ann = os.path.join(other, "annotations", gallery[0]["img_name"] + ".mat")
    boxes = scipy.io.loadmat(ann)["box_new"]
    boxes[0, 1] += 3.0  # one box moved: same sizes, other annotations
    scipy.io.savemat(ann, {"box_new": boxes})
    g2, q2 = load_records("PRW", other, "gallery"), load_records("PRW", other, "query")
    assert (len(g2), len(q2)) == (len(gallery), len(query))
    path = tmp_path / "other_cache.pth"
    save_cache(path, random_cache(g2, q2, seed=1), dataset_identity("PRW", g2, q2))
    with pytest.raises(SystemExit) as e:
        main(["--cache", str(path), "INPUT.DATASET", "PRW", "INPUT.DATA_ROOT", root])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "annotation_digest" in err and "another dataset" in err
