"""Plain-loop oracle of the evaluation protocol (tests and benchmarks only).

Written like the release's eval loops (one query, one gallery image, one box
at a time) with this project's tie rules, so the vectorized oimnet.eval must
give the same numbers. Uses scikit-learn's average_precision_score.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import average_precision_score

TOPK = (1, 5, 10)


def iou(a, b) -> float:
    """IoU of two x1y1x2y2 boxes, Python floats; 0 when the union is 0."""
    a = [float(v) for v in a[:4]]
    b = [float(v) for v in b[:4]]
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def sk_ap(y_true, y_score) -> float:
    if not any(y_true):
        return 0.0
    return float(average_precision_score(np.asarray(y_true, dtype=int), np.asarray(y_score, dtype=np.float64)))


def ref_detection(gallery, gallery_dets, det_thresh=0.01, iou_thresh=0.5, labeled_only=False):
    """(recall, ap) as the release's eval_detection computes them."""
    y_true, y_score = [], []
    count_gt = count_tp = 0
    for rec, det in zip(gallery, gallery_dets):
        gt = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
        if labeled_only:
            gt = gt[np.asarray(rec["pids"]).reshape(-1) != 5555]
            if len(gt) == 0:
                continue
        det = np.asarray(det, dtype=np.float64).reshape(-1, 5)
        det = det[det[:, 4] >= det_thresh]
        if len(det) == 0:
            count_gt += len(gt)
            continue
        ious = np.zeros((len(gt), len(det)))
        for i in range(len(gt)):
            for j in range(len(det)):
                ious[i, j] = iou(gt[i], det[j])
        tf = ious >= iou_thresh
        if len(gt):
            for j in range(len(det)):
                best = int(np.argmax(ious[:, j]))
                for i in range(len(gt)):
                    if i != best:
                        tf[i, j] = False
            for i in range(len(gt)):
                best = int(np.argmax(ious[i, :]))
                for j in range(len(det)):
                    if j != best:
                        tf[i, j] = False
        for j in range(len(det)):
            y_score.append(det[j, 4])
            y_true.append(bool(tf[:, j].any()))
        count_tp += int(tf.sum())
        count_gt += len(gt)
    recall = count_tp / count_gt if count_gt else 0.0
    ap = sk_ap(y_true, y_score) * recall if count_tp else 0.0
    return recall, ap


def _kept(cache, score_thresh):
    """gallery index -> (dets (n,5), feats (n,F)) with score >= score_thresh."""
    out = {}
    for i, (d, f) in enumerate(zip(cache["gallery_dets"], cache["gallery_feats"])):
        d = np.asarray(d, dtype=np.float64).reshape(-1, 5)
        f = np.asarray(f, dtype=np.float64).reshape(len(d), -1) if len(d) else np.zeros((0, 1))
        keep = d[:, 4] >= score_thresh
        out[i] = (d[keep], f[keep])
    return out


def _one_query(cands, kept, names, qfeat, context, k1, cbgm):
    """cands: [(gallery index, GT box or None)] ascending by index.
    Returns (ap, hits, count_tp, count_gt, top10 [(name, box, score, correct)])."""
    count_gt = sum(1 for _, gt in cands if gt is not None)
    sims, rows = {}, []
    for img, _ in cands:
        det, feat = kept[img]
        if len(det) == 0:
            continue
        sims[img] = np.array([float(np.dot(feat[j], qfeat)) for j in range(len(det))])
        for j in range(len(det)):
            rows.append((img, j))
    if cbgm and rows and len(context):
        flat = np.array([sims[img][j] for img, j in rows])
        top = np.argsort(flat, kind="stable")[-k1:]
        for img in sorted({rows[t][0] for t in top}):
            feat = kept[img][1]
            w = np.zeros((len(context), len(feat)))
            for a in range(len(context)):
                for b in range(len(feat)):
                    w[a, b] = (context[a] * feat[b]).sum()
            r, c = linear_sum_assignment(w, maximize=True)
            max_val = max(w[a, b] for a, b in zip(r, c))
            for a, b in zip(r, c):
                if a == 0:
                    sims[img][b] = max_val
                    break
    labels = {img: np.zeros(len(s), dtype=int) for img, s in sims.items()}
    count_tp = 0
    for img, gt in cands:
        if gt is None or img not in sims:
            continue
        w, h = gt[2] - gt[0], gt[3] - gt[1]
        thr = min(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))
        det, s = kept[img][0], sims[img]
        for j in sorted(range(len(s)), key=lambda j: (-s[j], j)):
            if iou(det[j], gt) >= thr:
                labels[img][j] = 1
                count_tp += 1
                break
    y_true = [labels[img][j] for img, j in rows]
    y_score = [sims[img][j] for img, j in rows]
    ap = sk_ap(y_true, y_score) * (count_tp * 1.0 / count_gt) if count_tp else 0.0
    order = np.lexsort((np.arange(len(rows)), -np.asarray(y_score, dtype=np.float64)))
    ranked = [y_true[t] for t in order]
    hits = [any(ranked[:k]) for k in TOPK]
    top10 = [
        (names[rows[t][0]], [float(v) for v in kept[rows[t][0]][0][rows[t][1], :4]], float(y_score[t]), bool(y_true[t]))
        for t in order[:10]
    ]
    return ap, hits, count_tp, count_gt, top10


def _summary(per):
    n = max(len(per), 1)
    out = {"mAP": sum(p[0] for p in per) / n}
    for j, k in enumerate(TOPK):
        out[f"top{k}"] = sum(1 for p in per if p[1][j]) / n
    out["per_query"] = per
    return out


def _context(cache, q, k2):
    return np.asarray(cache["query_feats"][q], dtype=np.float64).reshape(len(cache["query_dets"][q]), -1)[:k2]


def ref_search_prw(gallery, query, cache, multi_view=False, cbgm=False, k1=30, k2=4, score_thresh=0.5):
    """PRW protocol: all gallery frames but the query's (other cameras only
    when multi_view); positive = frame holding the query pid (first box)."""
    kept = _kept(cache, score_thresh)
    names = [g["img_name"] for g in gallery]
    per = []
    for q, qrec in enumerate(query):
        pid = int(np.asarray(qrec["pids"]).reshape(-1)[0])
        cands = []
        for i, g in enumerate(gallery):
            if g["img_name"] == qrec["img_name"]:
                continue
            if multi_view and g["cam_id"] == qrec["cam_id"]:
                continue
            gt = None
            for box, p in zip(
                np.asarray(g["boxes"], dtype=np.float64).reshape(-1, 4), np.asarray(g["pids"]).reshape(-1)
            ):
                if p == pid:
                    gt = box
                    break
            cands.append((i, gt))
        qfeat = np.asarray(cache["query_box_feats"][q], dtype=np.float64).reshape(-1)
        ctx = _context(cache, q, k2) if cbgm else []
        per.append(_one_query(cands, kept, names, qfeat, ctx, k1, cbgm))
    return _summary(per)


def ref_search_cuhk(gallery, query, cache, protocol, cbgm=False, k1=10, k2=3, score_thresh=0.5):
    """CUHK-SYSU protocol from per-query lists [{img_name, box or None}]."""
    kept = _kept(cache, score_thresh)
    names = [g["img_name"] for g in gallery]
    pos_of = {n: i for i, n in enumerate(names)}
    per = []
    for q in range(len(query)):
        cands = sorted(
            (pos_of[e["img_name"]], None if e["box"] is None else np.asarray(e["box"], dtype=np.float64))
            for e in protocol[q]
        )
        qfeat = np.asarray(cache["query_box_feats"][q], dtype=np.float64).reshape(-1)
        ctx = _context(cache, q, k2) if cbgm else []
        per.append(_one_query(cands, kept, names, qfeat, ctx, k1, cbgm))
    return _summary(per)
