"""The identity-disjoint validation split on generated PRW, CUHK-SYSU and synthetic worlds."""

from __future__ import annotations

import numpy as np
import pytest

from oimnet.data import DatasetError, load_records
from oimnet.data.splits import ValSplit, apply, carve
from oimnet.data.synth import generate
from oimnet.eval import evaluate_cache

U = 5555


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """dataset name -> root: PRW and CUHK-SYSU formats (annotations only), and a rendered synthetic world."""
    base = tmp_path_factory.mktemp("split-worlds")
    generate(str(base / "prw"), "prw", seed=3, identities=40, frames=160, annotations_only=True)
    generate(str(base / "cuhk"), "cuhk", seed=4, identities=40, frames=160, annotations_only=True)
    generate(str(base / "synth"), "prw", seed=5, identities=24, frames=60, size="96x64")
    return {"PRW": str(base / "prw"), "CUHK-SYSU": str(base / "cuhk"), "synthetic": str(base / "synth")}


def _labelled(records):
    return {int(p) for r in records for p in np.asarray(r["pids"]) if p != U and p > 0}


def _perfect_cache(gallery, query):
    """GT boxes as detections (score 1); one-hot features by pid, unlabeled boxes orthogonal to all."""
    dim = max(max(_labelled(gallery)), max(int(q["pids"][0]) for q in query)) + 2

    def feat(pid):
        v = np.zeros(dim, np.float32)
        v[pid if pid != U else dim - 1] = 1.0
        return v

    dets = [np.hstack([r["boxes"], np.ones((len(r["boxes"]), 1), np.float32)]) for r in gallery]
    feats = [np.stack([feat(int(p)) for p in r["pids"]]) if len(r["pids"]) else np.zeros((0, dim)) for r in gallery]
    return {"gallery_dets": dets, "gallery_feats": feats, "query_box_feats": [feat(int(q["pids"][0])) for q in query]}


@pytest.mark.parametrize("dataset", ["PRW", "CUHK-SYSU", "synthetic"])
def test_val_identities_disjoint_and_protocol_valid(worlds, dataset, tmp_path):
    root = worlds[dataset]
    train = load_records(dataset, root, "train")
    split = carve(train, dataset, fraction=0.2, seed=7, gallery_size=20)
    recs = apply(split, train)

    # identities: held-out ids never labelled in training; training relabelled 1..L'
    original_train_ids = _labelled(train)
    assert set(split.val_ids) <= original_train_ids
    assert len(split.val_ids) == round(0.2 * len(original_train_ids))
    assert not set(split.val_ids) & set(split.train_ids)
    assert _labelled(recs.train) == set(range(1, split.lut_size + 1))
    assert split.lut_size == len(split.train_ids) < len(original_train_ids)
    kept = {r["img_name"] for r in recs.train}
    for r in train:  # the original pids of the training images that stayed
        if r["img_name"] in kept:
            assert not set(np.asarray(r["pids"]).tolist()) & set(split.val_ids)
    # images: validation images are training images, not trained on, and none is a test image
    val_names = {r["img_name"] for r in recs.gallery}
    assert val_names and not val_names & kept
    assert val_names | kept == {r["img_name"] for r in train}
    test_names = {r["img_name"] for s in ("gallery", "query") for r in load_records(dataset, root, s)}
    assert not val_names & test_names
    if dataset != "CUHK-SYSU":  # PRW-format pids are global: test identities are other people
        test_ids = _labelled(load_records(dataset, root, "gallery"))
        assert not set(split.val_ids) & test_ids
    # gallery labels: held-out ids kept, every other box unlabeled
    assert _labelled(recs.gallery) == set(split.val_ids)

    # queries shaped like the test split
    assert all(len(q["pids"]) == 1 and int(q["pids"][0]) in split.val_ids for q in recs.query)
    assert {int(q["pids"][0]) for q in recs.query} == set(split.val_ids)
    if dataset == "CUHK-SYSU":
        assert len(recs.query) == len(split.val_ids)  # one query per identity
        for q, entries in zip(recs.query, recs.protocol):
            names = [e["img_name"] for e in entries]
            assert q["img_name"] not in names and len(set(names)) == len(names)
            assert len(entries) == min(20, len(val_names) - 1)
            boxed = [e["box"] is not None for e in entries]
            assert boxed[0] and boxed == sorted(boxed, reverse=True)  # the person's images first
    else:  # one query per identity per camera it appears in
        cams = {(int(p), r["cam_id"]) for r in recs.gallery for p in r["pids"] if p != U}
        assert {(int(q["pids"][0]), q["cam_id"]) for q in recs.query} == cams
        assert recs.protocol is None

    # the protocol runs through the evaluator: perfect features find every positive
    cfg = {"INPUT": {"DATASET": dataset}, "EVAL_GALLERY_SIZE": 20}
    from omegaconf import OmegaConf

    result = evaluate_cache(
        OmegaConf.create(cfg),
        _perfect_cache(recs.gallery, recs.query),
        recs.gallery,
        recs.query,
        recs.protocol,
        per_query=False,
    )
    assert result["queries_without_positive"] == 0
    assert result["mAP"] == pytest.approx(1.0) and result["top1"] == pytest.approx(1.0)

    # saved with the run and read back: the same split
    path = split.save(tmp_path / "val_split.json")
    again = ValSplit.load(path)
    assert again == split
    assert apply(again, train).query[0]["img_name"] == recs.query[0]["img_name"]


def test_split_is_deterministic_for_a_seed(worlds):
    train = load_records("PRW", worlds["PRW"], "train")
    a, b = carve(train, "PRW", seed=1), carve(train, "PRW", seed=1)
    assert a == b
    assert carve(train, "PRW", seed=2).val_ids != a.val_ids
    assert a.summary()["val_ids"] == len(a.val_ids) >= 2


def test_bad_fraction_and_changed_dataset_are_clear_errors(worlds, tmp_path):
    train = load_records("PRW", worlds["PRW"], "train")
    with pytest.raises(ValueError, match="validation fraction 1.5"):
        carve(train, "PRW", fraction=1.5)
    with pytest.raises(ValueError, match="cannot hold out"):
        carve(train, "PRW", fraction=0.99)
    split = carve(train, "PRW", seed=1)
    with pytest.raises(DatasetError, match="dataset changed"):
        apply(split, [r for r in train if r["img_name"] != split.val_images[0]])
    bad = tmp_path / "val_split.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(DatasetError, match="not a version-1 validation split"):
        ValSplit.load(bad)
