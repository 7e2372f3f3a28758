"""compute_eval_cache on a small generated synthetic dataset with the tiny backbone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from oimnet.config import load_config
from oimnet.models import build_model
from oimnet.models.inference import compute_eval_cache

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
    cache = compute_eval_cache(model, cfg, torch.device("cpu"))
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
    cache = compute_eval_cache(model, cfg, torch.device("cpu"))
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
