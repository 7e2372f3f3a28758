"""The predictor (oimnet.models.predictor) on a small generated synthetic dataset with the tiny backbone."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from oimnet.config import load_config
from oimnet.models import build_model
from oimnet.models.predictor import Predictor, eval_cache

logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = load_config(
        None,
        {
            "INPUT.DATASET": "synthetic",
            "INPUT.DATA_ROOT": str(root / "world"),
            "INPUT.SYNTH.IDENTITIES": 8,
            "INPUT.SYNTH.FRAMES": 24,
            "INPUT.SYNTH.SIZE": "160x120",
            "INPUT.MIN_SIZE": 96,  # resized by 0.8 in the model: detections must come back in original pixels
            "INPUT.MAX_SIZE": 200,
            "INPUT.NUM_WORKERS_TEST": 0,
            "INPUT.BATCH_SIZE_TEST": 2,
            "MODEL.BACKBONE.NAME": "tiny",
            "MODEL.LOSS.LUT_SIZE": 8,
            "MODEL.LOSS.CQ_SIZE": 8,
            "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
            "MODEL.RPN.ANCHOR_SIZES": [16, 32, 64],
            "MODEL.RPN.POST_NMS_TOPN_TEST": 30,
            "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.0,
        },
    )
    from oimnet.data import load_records
    from oimnet.data.loader import synth_kwargs_from_cfg

    kwargs = synth_kwargs_from_cfg(cfg)
    records = {s: load_records("synthetic", cfg.INPUT.DATA_ROOT, s, synth_kwargs=kwargs) for s in ("gallery", "query")}
    torch.manual_seed(0)
    return cfg, build_model(cfg), records


def test_eval_cache_format(setup):
    cfg, model, records = setup
    model.train()
    cache = Predictor(model, "cpu").eval_cache(cfg)
    assert model.training  # mode restored
    assert len(cache["gallery_dets"]) == len(cache["gallery_feats"]) == len(records["gallery"])
    assert (
        len(cache["query_dets"]) == len(cache["query_feats"]) == len(cache["query_box_feats"]) == len(records["query"])
    )
    for dets, feats in zip(cache["gallery_dets"], cache["gallery_feats"]):
        assert dets.dtype == np.float32 and dets.shape[1] == 5 and feats.shape == (len(dets), 256)
        assert (dets[:, 2] <= 160 + 1e-3).all() and (dets[:, 3] <= 120 + 1e-3).all()  # original pixels
    for rec, dets, feats, box_feat in zip(
        records["query"], cache["query_dets"], cache["query_feats"], cache["query_box_feats"]
    ):
        np.testing.assert_allclose(dets[0, :4], rec["boxes"][0], atol=1e-3)  # query box first, original pixels
        assert dets[0, 4] == 1.0
        assert box_feat.shape == (256,) and np.allclose(box_feat, feats[0])
        assert np.isclose(np.linalg.norm(box_feat), 1.0, atol=1e-4)


def test_eval_cache_with_gt_boxes(setup):
    cfg, model, records = setup
    cfg = cfg.copy()
    cfg.EVAL_USE_GT = True
    cache = Predictor(model, "cpu").eval_cache(cfg)
    for rec, dets, feats in zip(records["gallery"], cache["gallery_dets"], cache["gallery_feats"]):
        np.testing.assert_allclose(dets[:, :4], rec["boxes"], atol=1e-3)
        assert (dets[:, 4] == 1.0).all() and feats.shape == (len(rec["boxes"]), 256)
    # the same box gives the same embedding whether embedded as a query or as a gallery GT box
    q = records["query"][0]
    g = [i for i, r in enumerate(records["gallery"]) if r["img_name"] == q["img_name"]]
    if g:
        row = np.where(np.abs(records["gallery"][g[0]]["boxes"] - q["boxes"][0]).sum(1) < 1e-3)[0]
        if len(row):
            assert np.allclose(cache["gallery_feats"][g[0]][row[0]], cache["query_box_feats"][0], atol=1e-4)


def _images(records):
    from oimnet.data.loader import DetectionDataset

    return [img for img, _ in DetectionDataset(records)]


def test_given_box_embeddings_equal_the_detection_path(setup):
    """``embed(images, boxes)`` and the detection path agree where the detection
    path embeds a given box: the query box put first by ``detect(images,
    query_boxes)`` (the evaluation's query features), and the gallery's GT boxes.
    (A detected box's embedding is pooled from its proposal before box
    regression, as in the release, so it is not the embedding of the final box.)"""
    cfg, model, records = setup
    predictor = Predictor(model, "cpu")
    queries = records["query"][:6]
    images = _images(queries)
    boxes = [q["boxes"][:1] for q in queries]
    given = predictor.embed(images, boxes)
    detected = predictor.detect(images, query_boxes=boxes)
    for g, d, b in zip(given, detected, boxes):
        assert g.shape == (1, 256) and g.dtype == np.float32
        np.testing.assert_allclose(d.boxes[0], b[0], atol=1e-4)
        assert d.scores[0] == 1.0
        np.testing.assert_allclose(g[0], d.embeddings[0], atol=1e-5)
    gallery = records["gallery"][:4]
    gt = predictor.predict_split(cfg, "gallery", gallery, use_gt=True, progress=False)
    for i, emb in enumerate(predictor.embed(_images(gallery), [r["boxes"] for r in gallery])):
        np.testing.assert_allclose(gt[i].embeddings, emb, atol=1e-5)
        np.testing.assert_array_equal(gt[i].scores, np.ones(len(emb), np.float32))


def test_shards_merge_into_the_full_pass(setup):
    """Gallery and query passes over two strided shards of record indices, merged
    by dict union, give the eval cache of one pass over everything."""
    cfg, model, _ = setup
    cfg = cfg.copy()
    cfg.INPUT.BATCH_SIZE_TEST = 1  # the same batches either way: arrays equal to float rounding only
    predictor = Predictor(model, "cpu")
    whole = predictor.eval_cache(cfg)
    merged = {}
    for split in ("gallery", "query"):
        n = len(whole[f"{split}_dets"])
        shards = [list(range(r, n, 2)) for r in (0, 1)]
        parts = [predictor.predict_split(cfg, split, indices=s, progress=False) for s in shards]
        assert [sorted(p) for p in parts] == shards  # keyed by index in the whole split
        merged[split] = {**parts[0], **parts[1]}
    cache = eval_cache(merged["gallery"], merged["query"])
    for key, want in whole.items():
        assert len(cache[key]) == len(want)
        for got, w in zip(cache[key], want):
            assert got.shape == w.shape and got.dtype == w.dtype
            np.testing.assert_allclose(got, w, atol=1e-5)
    with pytest.raises(ValueError, match=r"gallery results: expected record indices 0\.\.\d+ once each, missing \[1"):
        eval_cache({0: merged["gallery"][0], 2: merged["gallery"][2]}, merged["query"])


def test_demo_and_evaluation_get_identical_arrays(setup):
    """The demo's gallery pass and query embedding are the evaluation's arrays."""
    from oimnet import demo

    cfg, model, records = setup
    predictor = Predictor(model, "cpu")
    cache = predictor.eval_cache(cfg)
    gallery = records["gallery"]
    feats, cached = demo.embed_gallery(predictor, cfg, [r["img_path"] for r in gallery], progress=False)
    assert not cached
    for i, dets in enumerate(cache["gallery_dets"]):
        rows = feats.image_index == i
        np.testing.assert_array_equal(feats.boxes[rows], dets[:, :4])
        np.testing.assert_array_equal(feats.scores[rows], dets[:, 4])
        np.testing.assert_array_equal(feats.feats[rows], cache["gallery_feats"][i])
    for q, want in zip(records["query"][:6], cache["query_box_feats"]):
        np.testing.assert_allclose(demo.embed_query(predictor, q["img_path"], q["boxes"][0]), want, atol=1e-5)


def test_predictor_restores_mode_and_rejects_a_query_without_one_box(setup):
    cfg, model, records = setup
    model.train()
    predictor = Predictor(model, "cpu")
    out = predictor.detect(_images(records["gallery"][:2]))
    assert model.training and len(out) == 2
    assert all(r.boxes.dtype == r.embeddings.dtype == np.float32 for r in out)
    bad = [{**records["gallery"][0]}]
    assert len(bad[0]["boxes"]) != 1
    with pytest.raises(ValueError, match="expected exactly one query box"):
        predictor.predict_split(cfg, "query", bad, progress=False)
    assert model.training
    with pytest.raises(ValueError, match="split 'train'"):
        predictor.predict_loader([], "train")


def test_evaluate_cli_with_a_checkpoint_writes_the_predictors_cache(setup, tmp_path, capsys):
    """`python -m oimnet.evaluate --ckpt` computes its cache through the
    predictor built from the checkpoint: the arrays of the in-memory model's."""
    from oimnet.config import to_yaml
    from oimnet.eval import load_cache
    from oimnet.evaluate import main

    cfg, model, _ = setup
    cfg_file, ckpt, cache_file = tmp_path / "cfg.yaml", tmp_path / "model.pth", tmp_path / "cache.pth"
    cfg_file.write_text(to_yaml(cfg))
    torch.save({"model": model.state_dict()}, ckpt)
    assert (
        main(["--cfg", str(cfg_file), "--ckpt", str(ckpt), "--cache", str(cache_file), "--json", "DEVICE", "cpu"]) == 0
    )
    assert 0.0 <= json.loads(capsys.readouterr().out)["mAP"] <= 1.0
    got, want = load_cache(cache_file), Predictor(model, "cpu").eval_cache(cfg)
    for key, arrays in want.items():
        assert len(got[key]) == len(arrays)
        for g, w in zip(got[key], arrays):
            np.testing.assert_array_equal(np.asarray(g), w)


def test_amp_runs_under_float16_autocast_and_returns_float32(setup):
    """``amp=True``: float16 autocast (on the CPU too, where torch has it); host arrays stay float32."""
    _, model, records = setup
    gallery = records["gallery"][:2]
    images, boxes = _images(gallery), [r["boxes"] for r in gallery]
    full = Predictor(model, "cpu").embed(images, boxes)
    half = Predictor(model, "cpu", amp=True).embed(images, boxes)
    for f, h in zip(full, half):
        assert h.dtype == np.float32 and h.shape == f.shape
        assert not np.array_equal(h, f)  # it did run in half precision
        np.testing.assert_allclose(h, f, atol=5e-3)
