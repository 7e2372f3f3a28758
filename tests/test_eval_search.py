"""Person search: hand-computed protocol cases and the loop oracle."""

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from reference_eval import ref_search_cuhk, ref_search_prw

from oimnet.eval import evaluate_cache
from oimnet.eval.fake import random_cache, random_cuhk_protocol, random_world

PRW = OmegaConf.create({"INPUT": {"DATASET": "PRW"}, "EVAL_USE_CBGM": False})
PRW_CBGM = OmegaConf.create({"INPUT": {"DATASET": "PRW"}, "EVAL_USE_CBGM": True})


def rec(name, boxes, pids, cam):
    return {
        "img_name": name,
        "img_path": name,
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "pids": np.array(pids, np.int64),
        "cam_id": cam,
    }


def feat(*v):
    """A 4-d feature whose dot product with e1 = (1,0,0,0) is v[0]."""
    v = list(v) + [0.0] * (4 - len(v))
    return np.array(v, np.float32)


def unit_with_sim(s, axis=2):
    """Unit vector with dot product s with e1, rest along another axis."""
    v = np.zeros(4, np.float32)
    v[0] = s
    v[axis] = math.sqrt(1 - s * s)
    return v


BOX_A = [100, 100, 140, 200]
BOX_B = [300, 100, 340, 200]
BOX_C = [500, 100, 540, 200]


def world():
    """Query pid 7 (frame q, cam 1). g1 (cam 2): pid 7 + a passer-by;
    g2 (cam 1): pid 7 but its only detection scores 0.4; g3 (cam 2): others."""
    gallery = [
        rec("q.jpg", [BOX_A], [7], 1),
        rec("g1.jpg", [BOX_A, BOX_B], [7, 5555], 2),
        rec("g2.jpg", [BOX_A], [7], 1),
        rec("g3.jpg", [BOX_C], [9], 2),
    ]
    query = [rec("q.jpg", [BOX_A], [7], 1)]
    cache = {
        "gallery_dets": [
            np.array([BOX_A + [0.99]], np.float32),
            np.array([BOX_B + [0.9], BOX_A + [0.8]], np.float32),
            np.array([BOX_A + [0.4]], np.float32),
            np.array([BOX_C + [0.7]], np.float32),
        ],
        "gallery_feats": [
            np.stack([unit_with_sim(1.0)]),
            np.stack([unit_with_sim(0.95), unit_with_sim(0.9)]),
            np.stack([unit_with_sim(0.99)]),
            np.stack([unit_with_sim(0.5)]),
        ],
        "query_box_feats": [feat(1)],
        "query_dets": [np.array([BOX_A + [1.0]], np.float32)],
        "query_feats": [np.stack([feat(1)])],
    }
    return gallery, query, cache


def test_hand_computed_prw_query():
    gallery, query, cache = world()
    m = evaluate_cache(PRW, cache, gallery, query)
    # ranked: passer-by 0.95 (F), pid 7 in g1 0.9 (T), g3 0.5 (F); the query
    # frame is left out; g2's detection is below 0.5: 1 of 2 positives found
    assert m["mAP"] == pytest.approx(0.5 * 0.5)
    assert (m["top1"], m["top5"], m["top10"]) == (0.0, 1.0, 1.0)
    q = m["per_query"][0]
    assert (q["count_gt"], q["count_tp"]) == (2, 1)
    assert [(e["img_name"], e["correct"]) for e in q["top10"]] == [
        ("g1.jpg", False),
        ("g1.jpg", True),
        ("g3.jpg", False),
    ]
    assert q["top10"][1]["box"] == BOX_A and q["top10"][1]["score"] == pytest.approx(0.9, abs=1e-6)
    # multi-view: g2 (same camera as the query) leaves the gallery
    assert m["mAP_multiview"] == pytest.approx(0.5)
    assert m["top1_multiview"] == 0.0


def test_query_without_true_match_scores_zero():
    gallery, query, cache = world()
    query[0]["pids"] = np.array([42])  # nobody else is person 42
    m = evaluate_cache(PRW, cache, gallery, query)
    assert m["mAP"] == 0.0 and m["top10"] == 0.0
    assert m["queries_without_positive"] == 1


def test_detection_off_target_is_no_match_small_people_looser():
    gallery, query, cache = world()
    # move g1's pid-7 detection: IoU with its 40x100 GT is 0.4 -> not a match
    cache["gallery_dets"][1][1, :4] = [100, 100, 140, 140]
    m = evaluate_cache(PRW, cache, gallery, query)
    assert m["mAP"] == 0.0
    # a 10x20 person needs only IoU 200/(20*30) = 1/3: IoU 0.4 is a hit
    small = [100, 100, 110, 120]
    gallery[1]["boxes"][0] = small
    cache["gallery_dets"][1][1, :4] = [100, 100, 110, 108]
    assert evaluate_cache(PRW, cache, gallery, query)["mAP"] == pytest.approx(0.25)


def test_highest_similarity_matching_detection_is_the_one_true_positive():
    gallery, query, cache = world()
    # a second, less similar detection on the same person in g1: a false positive
    cache["gallery_dets"][1] = np.vstack(
        [cache["gallery_dets"][1], np.array([BOX_A[:2] + [141, 201] + [0.7]], np.float32)]
    )
    cache["gallery_feats"][1] = np.vstack([cache["gallery_feats"][1], unit_with_sim(0.3)])
    m = evaluate_cache(PRW, cache, gallery, query)
    top = m["per_query"][0]["top10"]
    assert [e["correct"] for e in top] == [False, True, False, False]
    assert m["mAP"] == pytest.approx(0.25)


@pytest.mark.parametrize("positive_first", [True, False])
def test_tied_scores(positive_first):
    gallery, query, cache = world()
    # g1's passer-by now ties with the true match at 0.9 (same image, passer-by first);
    # g3 gets a tie at 0.9 too, before or after g1 in gallery order
    cache["gallery_feats"][1][0] = unit_with_sim(0.9)
    cache["gallery_feats"][3][0] = unit_with_sim(0.9)
    gallery = [gallery[0], gallery[3], gallery[2], gallery[1]] if not positive_first else gallery
    order = [0, 3, 2, 1] if not positive_first else [0, 1, 2, 3]
    for key in ("gallery_dets", "gallery_feats"):
        cache[key] = [cache[key][i] for i in order]
    m = evaluate_cache(PRW, cache, gallery, query)
    # three detections at 0.9, one positive: precision 1/3 at the only threshold
    assert m["mAP"] == pytest.approx(0.5 / 3)
    # tie rule: gallery order, then detection order; in g1 the passer-by comes first
    top = m["per_query"][0]["top10"]
    assert [e["img_name"] for e in top] == (
        ["g1.jpg", "g1.jpg", "g3.jpg"] if positive_first else ["g3.jpg", "g1.jpg", "g1.jpg"]
    )
    assert [e["correct"] for e in top].index(True) == (1 if positive_first else 2)
    assert m["top1"] == 0.0
    ref = ref_search_prw(gallery, query, cache)
    assert ref["mAP"] == pytest.approx(m["mAP"], abs=1e-12) and ref["top1"] == m["top1"]


def cbgm_world():
    """Without context the distractor in b.jpg (0.7) beats the true match in
    a.jpg (0.6); the query's companion (context row) is in a.jpg (0.99)."""
    gallery = [
        rec("q.jpg", [BOX_A, BOX_B], [7, 8], 1),
        rec("a.jpg", [BOX_A, BOX_B], [7, 8], 2),
        rec("b.jpg", [BOX_A, BOX_B], [3, 4], 3),
    ]
    query = [rec("q.jpg", [BOX_A], [7], 1)]
    e1, e2 = feat(1), feat(0, 1)
    cache = {
        "gallery_dets": [np.array([BOX_A + [0.9], BOX_B + [0.9]], np.float32)] * 3,
        "gallery_feats": [
            np.stack([e1, e2]),
            np.stack([feat(0.6, 0, 0.8), feat(0, 0.99, math.sqrt(1 - 0.99**2))]),
            np.stack([feat(0.7, 0, 0, math.sqrt(0.51)), feat(0, 0.1, 0, math.sqrt(0.99))]),
        ],
        "query_box_feats": [e1],
        "query_dets": [np.array([BOX_A + [1.0], BOX_B + [0.9]], np.float32)],
        "query_feats": [np.stack([e1, e2])],
    }
    return gallery, query, cache


def test_cbgm_changes_a_rank():
    gallery, query, cache = cbgm_world()
    plain = evaluate_cache(PRW, cache, gallery, query)
    assert plain["top1"] == 0.0 and plain["mAP"] == pytest.approx(0.5)
    m = evaluate_cache(PRW_CBGM, cache, gallery, query)
    # a.jpg: query box <-> true match (0.6) + companion <-> companion (0.99):
    # the true match gets the largest matched edge, 0.99, and ranks first
    top = m["per_query"][0]["top10"]
    assert top[0]["img_name"] == "a.jpg" and top[0]["correct"] and top[0]["score"] == pytest.approx(0.99, abs=1e-6)
    assert m["top1"] == 1.0 and m["mAP"] == pytest.approx(1.0)
    assert m["use_cbgm"] is True
    ref = ref_search_prw(gallery, query, cache, cbgm=True)
    assert ref["mAP"] == pytest.approx(1.0) and ref["top1"] == 1.0


def test_cbgm_without_query_context_is_an_error():
    gallery, query, cache = cbgm_world()
    del cache["query_dets"], cache["query_feats"]
    with pytest.raises(ValueError, match="EVAL_USE_CBGM needs query_dets and query_feats"):
        evaluate_cache(PRW_CBGM, cache, gallery, query)


def test_cuhk_protocol_list_hand_case():
    gallery, query, cache = world()
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": 50})
    # the list decides: g2 holds the person (no detection >= 0.5), g3 does not; g1 is not listed
    protocol = [[{"img_name": "g2.jpg", "box": np.array(BOX_A, float)}, {"img_name": "g3.jpg", "box": None}]]
    m = evaluate_cache(cfg, cache, gallery, query, protocol)
    assert m["gallery_size"] == 50 and m["mAP"] == 0.0 and m["top10"] == 0.0
    assert m["per_query"][0]["count_gt"] == 1
    protocol[0].append({"img_name": "g1.jpg", "box": np.array(BOX_A, float)})
    m = evaluate_cache(cfg, cache, gallery, query, protocol)
    assert m["mAP"] == pytest.approx(0.5 * 0.5) and m["top1"] == 0.0 and m["top5"] == 1.0
    with pytest.raises(ValueError, match="gallery size 50 needs its protocol list"):
        evaluate_cache(cfg, cache, gallery, query)
    protocol[0].append({"img_name": "nowhere.jpg", "box": None})
    with pytest.raises(ValueError, match="'nowhere.jpg' is not among the gallery records"):
        evaluate_cache(cfg, cache, gallery, query, protocol)


# ------------------------------------------------------------ vs the oracle
def assert_same(m, ref):
    for k in ("mAP", "top1", "top5", "top10"):
        assert m[k] == pytest.approx(ref[k], abs=1e-9), k
    ap = np.array([q["ap"] for q in m["per_query"]])
    assert np.max(np.abs(ap - np.array([p[0] for p in ref["per_query"]]))) <= 1e-9
    for q, p in zip(m["per_query"], ref["per_query"]):
        assert (q["count_tp"], q["count_gt"]) == (p[2], p[3])
        assert [(e["img_name"], e["correct"]) for e in q["top10"]] == [(t[0], t[3]) for t in p[4]]
        assert [e["score"] for e in q["top10"]] == pytest.approx([t[2] for t in p[4]], abs=1e-12)


@pytest.fixture(scope="module")
def prw_case():
    gallery, query = random_world(160, 25, 25, seed=5)
    return gallery, query, random_cache(gallery, query, noise=0.2, seed=6)


@pytest.mark.parametrize("cbgm", [False, True])
@pytest.mark.parametrize("multi_view", [False, True])
def test_prw_matches_loop_oracle(prw_case, cbgm, multi_view):
    gallery, query, cache = prw_case
    m = evaluate_cache(PRW_CBGM if cbgm else PRW, cache, gallery, query, multi_view=multi_view)
    ref = ref_search_prw(gallery, query, cache, multi_view=multi_view, cbgm=cbgm)
    assert_same(m, ref)
    other = ref_search_prw(gallery, query, cache, multi_view=not multi_view, cbgm=cbgm)
    key = "mAP" if multi_view else "mAP_multiview"
    assert m[key] == pytest.approx((ref if multi_view else other)["mAP"], abs=1e-9)
    assert 0.05 < m["mAP"] < 0.95  # a ranking that is neither trivial nor hopeless


def test_synthetic_dataset_uses_prw_protocol(prw_case):
    gallery, query, cache = prw_case
    cfg = OmegaConf.create({"INPUT": {"DATASET": "synthetic"}})
    m = evaluate_cache(cfg, cache, gallery, query, per_query=False)
    assert m["mAP"] == pytest.approx(ref_search_prw(gallery, query, cache)["mAP"], abs=1e-9)
    assert "per_query" not in m and "gallery_size" not in m


@pytest.fixture(scope="module")
def cuhk_case():
    # enough images for TestG4000-like lists
    gallery, query = random_world(4100, 6, 1500, seed=7)
    return gallery, query, random_cache(gallery, query, noise=0.2, seed=8)


@pytest.mark.parametrize("size", [50, 100, 500, 1000, 2000, 4000, -1])
def test_cuhk_matches_loop_oracle_all_gallery_sizes(cuhk_case, size):
    gallery, query, cache = cuhk_case
    protocol = random_cuhk_protocol(gallery, query, size, seed=abs(size))
    cbgm = size in (100, -1)
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": size, "EVAL_USE_CBGM": cbgm})
    m = evaluate_cache(cfg, cache, gallery, query, protocol)
    assert m["gallery_size"] == size
    assert_same(m, ref_search_cuhk(gallery, query, cache, protocol, cbgm=cbgm))
    if size == -1:  # the full set from the records alone gives the same
        assert evaluate_cache(cfg, cache, gallery, query)["mAP"] == pytest.approx(m["mAP"], abs=1e-12)


@pytest.mark.parametrize("positive_first", [True, False])
def test_tied_scores_cuhk_list(positive_first):
    """The same ties through the CUHK-SYSU (per-query list, batched) path."""
    gallery, query, cache = world()
    cache["gallery_feats"][1][0] = unit_with_sim(0.9)
    cache["gallery_feats"][3][0] = unit_with_sim(0.9)
    order = [0, 1, 2, 3] if positive_first else [0, 3, 2, 1]
    gallery = [gallery[i] for i in order]
    for key in ("gallery_dets", "gallery_feats"):
        cache[key] = [cache[key][i] for i in order]
    protocol = [
        [
            {"img_name": "g3.jpg", "box": None},
            {"img_name": "g1.jpg", "box": np.array(BOX_A, float)},
            {"img_name": "g2.jpg", "box": np.array(BOX_A, float)},
        ]
    ]
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": 100})
    m = evaluate_cache(cfg, cache, gallery, query, protocol)
    assert m["mAP"] == pytest.approx(0.5 / 3)
    top = m["per_query"][0]["top10"]
    assert [e["img_name"] for e in top] == (
        ["g1.jpg", "g1.jpg", "g3.jpg"] if positive_first else ["g3.jpg", "g1.jpg", "g1.jpg"]
    )
    assert [e["correct"] for e in top].index(True) == (1 if positive_first else 2)
    assert m["top1"] == 0.0 and m["top5"] == 1.0
    ref = ref_search_cuhk(gallery, query, cache, protocol)
    assert ref["mAP"] == pytest.approx(m["mAP"], abs=1e-12) and ref["top1"] == m["top1"]
