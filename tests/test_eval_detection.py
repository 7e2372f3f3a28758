"""Detection recall/AP: hand-computed cases and the loop oracle."""

import numpy as np
import pytest
from reference_eval import ref_detection

from oimnet.eval.detection import detection_metrics
from oimnet.eval.fake import random_cache, random_world


def rec(name, boxes, pids):
    return {
        "img_name": name,
        "img_path": name,
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "pids": np.array(pids, np.int64),
        "cam_id": -1,
    }


def dets(rows):
    return np.array(rows, np.float32).reshape(-1, 5)


GALLERY = [
    rec("a.jpg", [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 5555]),
    rec("b.jpg", [[0, 0, 10, 20]], [5555]),
    rec("c.jpg", [[0, 0, 10, 30]], [3]),
]
DETS = [
    dets(
        [
            [0, 0, 10, 10, 0.9],  # hit on the first GT
            [1, 0, 11, 10, 0.8],  # duplicate of the same GT: false positive
            [20, 0, 30, 10, 0.005],  # below the 0.01 floor: ignored, GT missed
            [50, 50, 60, 60, 0.6],
        ]
    ),  # background: false positive
    dets([]),  # no detection at all: its GT is missed
    dets([[0, 0, 10, 30, 0.7]]),
]


def test_hand_computed_all_boxes():
    recall, ap = detection_metrics(GALLERY, DETS)
    # 2 hits of 4 GT; ranked T F T F -> sklearn AP (1 + 2/3) / 2, scaled by recall
    assert recall == pytest.approx(0.5)
    assert ap == pytest.approx((1 + 2 / 3) / 2 * 0.5)


def test_hand_computed_labeled_only():
    recall, ap = detection_metrics(GALLERY, DETS, labeled_only=True)
    # labeled GT: a.jpg first box, c.jpg; b.jpg (only unlabeled) is skipped
    assert recall == pytest.approx(1.0)
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_mutual_best_rule_not_greedy_matching():
    # det 2 overlaps both GT by 0.667 (tie -> first GT), but GT 1 prefers det 1,
    # so det 2 is no hit although a greedy matcher would give it GT 2
    g = [rec("a.jpg", [[0, 0, 10, 10], [4, 0, 14, 10]], [1, 2])]
    d = [dets([[0, 0, 10, 10, 0.9], [2, 0, 12, 10, 0.8]])]
    recall, _ = detection_metrics(g, d)
    assert recall == pytest.approx(0.5)
    assert (recall, detection_metrics(g, d)[1]) == pytest.approx(ref_detection(g, d))


def test_image_without_gt_counts_false_positives():
    g = [rec("a.jpg", [[0, 0, 10, 10]], [1]), rec("empty.jpg", [], [])]
    d = [dets([[0, 0, 10, 10, 0.5]]), dets([[0, 0, 5, 5, 0.9]])]
    recall, ap = detection_metrics(g, d)
    assert recall == 1.0 and ap == pytest.approx(0.5)


@pytest.mark.parametrize("labeled_only", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_oracle_on_random_cache(seed, labeled_only):
    gallery, query = random_world(150, 10, 30, seed=seed)
    cache = random_cache(gallery, query, seed=seed + 10, fp_per_frame=2.0)
    got = detection_metrics(gallery, cache["gallery_dets"], labeled_only=labeled_only)
    want = ref_detection(gallery, cache["gallery_dets"], labeled_only=labeled_only)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.3 < got[0] < 1.0  # the random case exercises misses and hits


def test_length_mismatch():
    with pytest.raises(ValueError, match="3 gallery records but 2 detection arrays"):
        detection_metrics(GALLERY, DETS[:2])
