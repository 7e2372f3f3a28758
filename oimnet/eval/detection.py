"""Detection recall and AP on the gallery images, as the release computes them.

Per image: keep detections with score >= score_floor (0.01); IoU between all
GT boxes and detections; a pair is a hit when IoU >= 0.5 and the detection is
the GT's best-overlapping detection and the GT is the detection's
best-overlapping GT (first index on ties). recall = hits / GT boxes;
AP = average_precision(det is a hit, det score) * recall.
``labeled_only`` keeps only GT with pid != 5555 and skips images without any
(their detections are then not counted as false positives either).
"""

from __future__ import annotations

import numpy as np

from oimnet.constants import UNLABELED_PID

from .ap import average_precision
from .boxes import paired_iou
from .segments import ranges_concat, segment_first_argmax

__all__ = ["UNLABELED_PID", "detection_metrics"]


def detection_metrics(
    gallery: list[dict],
    gallery_dets: list[np.ndarray],
    score_floor: float = 0.01,
    iou_thresh: float = 0.5,
    labeled_only: bool = False,
) -> tuple[float, float]:
    """(recall, ap), fractions in [0, 1].

    gallery: records (``boxes`` (n,4) x1y1x2y2, ``pids`` (n,)); gallery_dets:
    one (m,5) array per record (x1, y1, x2, y2, score), same order.
    """
    if len(gallery) != len(gallery_dets):
        raise ValueError(f"detection_metrics: {len(gallery)} gallery records but {len(gallery_dets)} detection arrays")
    gt_list, det_list = [], []
    for rec, det in zip(gallery, gallery_dets):
        gt = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
        if labeled_only:
            gt = gt[np.asarray(rec["pids"]).reshape(-1) != UNLABELED_PID]
            if len(gt) == 0:
                gt_list.append(gt)
                det_list.append(np.zeros((0, 5)))
                continue
        det = np.asarray(det, dtype=np.float64).reshape(-1, 5)
        gt_list.append(gt)
        det_list.append(det[det[:, 4] >= score_floor])

    n_gt = np.array([len(g) for g in gt_list], dtype=np.int64)
    n_det = np.array([len(d) for d in det_list], dtype=np.int64)
    count_gt = int(n_gt.sum())
    gts = np.concatenate(gt_list) if count_gt else np.zeros((0, 4))
    dets = np.concatenate(det_list) if n_det.sum() else np.zeros((0, 5))
    det_start = np.cumsum(n_det) - n_det

    # every (gt, det) pair of the same image, ordered by (image, gt, det)
    gt_img = np.repeat(np.arange(len(gt_list)), n_gt)
    pair_gt = np.repeat(np.arange(count_gt), n_det[gt_img])
    pair_det = ranges_concat(det_start[gt_img], n_det[gt_img])
    iou = paired_iou(gts[pair_gt], dets[pair_det, :4])

    _, best_det_of_gt = segment_first_argmax(iou, pair_gt)
    by_det = np.lexsort((pair_gt, pair_det))  # pairs ordered by (det, gt)
    _, best = segment_first_argmax(iou[by_det], pair_det[by_det])
    best_gt_of_det = by_det[best]
    hit = np.zeros(iou.size, dtype=bool)
    hit[np.intersect1d(best_det_of_gt, best_gt_of_det)] = True
    hit &= iou >= iou_thresh

    det_hit = np.zeros(len(dets), dtype=bool)
    det_hit[pair_det[hit]] = True
    count_tp = int(hit.sum())
    recall = count_tp / count_gt if count_gt else 0.0
    ap = average_precision(det_hit, dets[:, 4]) * recall if count_tp else 0.0
    return recall, ap
