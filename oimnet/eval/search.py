"""Person search ranking: mAP and top-k, vectorized over detections.

Protocol (the release's search evaluation, as the paper scores it), per query:

* the gallery detections with score >= 0.5 of the query's candidate gallery
  images are ranked by the dot product of their features with the query box
  feature (cosine similarity for L2-normalized features), optionally revised
  by CBGM;
* in every candidate image that contains the query person (GT box g), the
  detection with the highest similarity among those with
  IoU(det, g) >= min(0.5, w*h/((w+10)(h+10))) is the one true positive;
* AP = average precision of the ranked detections (scikit-learn's definition)
  times recall (true positives / candidate images containing the person);
  top-k = a true positive among the first k; mAP/top-k average over queries.

Tie rule (ours; the protocol leaves it open): detections with equal score are
ranked in gallery order (record order, then detection order), and within an
image the first of equally similar matching detections is the true positive.

The work is shared out as one :class:`GalleryIndex` (all kept detections
concatenated once) and one :class:`SearchTask` per protocol variant saying,
per query, which detections are candidates and which (image, GT box) pairs
are positives. Large candidate sets (PRW, CUHK-SYSU full set) get one
matrix product per chunk of queries and are scored query by query with
O(n) partial sorts; per-query lists (CUHK-SYSU TestG) get one gathered
product per query and are scored a chunk of queries at a time with a single
sort of (query, score) keys. The loop oracle is tests/reference_eval.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .ap import average_precision_from_positives
from .boxes import paired_iou, search_iou_threshold
from .cbgm import cbgm_revise
from .segments import ranges_concat, segment_first_argmax

__all__ = [
    "SEARCH_SCORE_THRESH",
    "TOPK",
    "GalleryIndex",
    "SearchTask",
    "SearchResult",
    "build_gallery_index",
    "run_search",
]

SEARCH_SCORE_THRESH = 0.5
TOPK = (1, 5, 10)
KEEP_TOP = 10  # ranked entries kept per query for the results JSON
_TOPK_ARR = np.array(TOPK)


@dataclass
class GalleryIndex:
    """All gallery detections with score >= threshold, concatenated.

    names: N gallery image names; pos_of: name -> gallery index;
    start/count: (N,) int64 range of each image's detections;
    boxes (D,4) float64 x1y1x2y2; scores (D,); feats (D,F) float64;
    det_img (D,) int64 image index of each detection.
    """

    names: list[str]
    pos_of: dict[str, int]
    start: np.ndarray
    count: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    feats: np.ndarray
    det_img: np.ndarray


def build_gallery_index(
    gallery: list[dict], dets: list[np.ndarray], feats: list[np.ndarray], score_thresh: float = SEARCH_SCORE_THRESH
) -> GalleryIndex:
    """Concatenate the detections (n_i,5) and features (n_i,F) of each gallery record."""
    dim = next((f.shape[1] for f in feats if np.ndim(f) == 2 and f.shape[1]), 0)
    n_all = np.array([len(d) for d in dets], dtype=np.int64)
    all_d = (
        np.concatenate([np.asarray(d, dtype=np.float64).reshape(-1, 5) for d in dets])
        if n_all.sum()
        else np.zeros((0, 5))
    )
    all_f = np.concatenate([np.asarray(f).reshape(-1, dim) for f in feats]) if n_all.sum() else np.zeros((0, dim))
    keep = all_d[:, 4] >= score_thresh
    det_img = np.repeat(np.arange(len(dets)), n_all)[keep]
    count = np.bincount(det_img, minlength=len(dets)).astype(np.int64)
    start = np.cumsum(count) - count
    kept = all_d[keep]
    names = [r["img_name"] for r in gallery]
    pos_of: dict[str, int] = {}
    for i, n in enumerate(names):
        pos_of.setdefault(n, i)
    return GalleryIndex(
        names,
        pos_of,
        start,
        count,
        kept[:, :4].copy(),
        kept[:, 4].copy(),
        np.ascontiguousarray(all_f[keep], dtype=np.float64),
        det_img,
    )


@dataclass
class SearchTask:
    """One protocol variant over all queries.

    candidates(q) -> ascending global detection indices ranked for query q;
    pos_q/pos_img/pos_box: positive (query, gallery image, GT box x1y1x2y2)
    triples sorted by query, at most one per (query, image);
    count_gt: (Q,) candidate images containing each query's person;
    dense: compute similarities against all detections (large candidate sets);
    excluded_range(q) -> (lo, hi), optional, for dense tasks whose candidates
    are all detections but lo..hi-1 (lets the similarity row be sliced);
    keep_top: record each query's first KEEP_TOP ranked detections;
    flat: optional (cand_det, offsets), every query's candidates in one array
    (query q owns cand_det[offsets[q]:offsets[q+1]]); sparse tasks with it
    are scored a chunk of queries at a time (:func:`_score_batch`).
    """

    candidates: Callable[[int], np.ndarray]
    pos_q: np.ndarray
    pos_img: np.ndarray
    pos_box: np.ndarray
    count_gt: np.ndarray
    dense: bool
    keep_top: bool = False
    excluded_range: Callable[[int], tuple[int, int]] | None = None
    flat: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class SearchResult:
    """Per query: ap (Q,), hits (Q, len(TOPK)) bool, count_tp (Q,), count_gt (Q,);
    top: per query a list of (global detection index, score, is true positive)
    for the first KEEP_TOP ranked detections (empty unless the task kept them)."""

    ap: np.ndarray
    hits: np.ndarray
    count_tp: np.ndarray
    count_gt: np.ndarray
    top: list = field(default_factory=list)

    def summary(self) -> dict:
        q = max(len(self.ap), 1)
        out = {"mAP": float(np.sum(self.ap) / q)}
        for j, k in enumerate(TOPK):
            out[f"top{k}"] = float(np.sum(self.hits[:, j]) / q)
        return out


def _matches(index: GalleryIndex, task: SearchTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections that may be the true positive of a positive pair.

    Returns (query, pair id, global detection index) of every detection of a
    positive image whose IoU with the GT box reaches the search threshold,
    ordered by (pair id, detection).
    """
    n = index.count[task.pos_img]
    pair = np.repeat(np.arange(task.pos_img.size), n)
    det = ranges_concat(index.start[task.pos_img], n)
    box = task.pos_box[pair]
    ok = paired_iou(index.boxes[det], box) >= search_iou_threshold(box)
    return task.pos_q[pair[ok]], pair[ok], det[ok]


def _top_positions(s: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first k of s ranked by score descending, ties by position."""
    n = s.size
    if n > k:
        v = np.partition(s, n - k)[n - k]
        cand = np.flatnonzero(s >= v)
    else:
        cand = np.arange(n)
    return cand[np.lexsort((cand, -s[cand]))][:k]


def _score_query(s, gdet, m_pair, m_det, count_gt, keep_top):
    """AP, top-k hits, #TP and top list of one query; s are its final similarities."""
    if m_det.size:
        mpos = np.searchsorted(gdet, m_det)
        _, first = segment_first_argmax(s[mpos], m_pair)
        tp_pos = mpos[first]
    else:
        tp_pos = np.zeros(0, np.int64)
    tp_scores = s[tp_pos]
    count_tp = tp_pos.size
    hits = np.zeros(len(TOPK), dtype=bool)
    ap = 0.0
    if count_tp:
        ap = average_precision_from_positives(s, tp_scores) * (count_tp * 1.0 / count_gt)
        best = tp_scores.max()
        first_best = tp_pos[tp_scores == best].min()
        rank = int(np.count_nonzero(s > best) + np.count_nonzero(s[:first_best] == best))
        hits = rank < _TOPK_ARR
    top = []
    if keep_top:
        tp_set = set(tp_pos.tolist())
        top = [(int(gdet[p]), float(s[p]), p in tp_set) for p in _top_positions(s, KEEP_TOP).tolist()]
    return ap, hits, count_tp, top


def _score_batch(s, qid, n_q, tp_pos, count_gt, keep_top):
    """Score a batch of queries at once; same results as :func:`_score_query`.

    s: (L,) similarities of every candidate of n_q queries, grouped by query
    (qid (L,) non-decreasing in 0..n_q-1, each query's detections in gallery
    order); tp_pos: (T,) positions in s of the true positives (ascending);
    count_gt: (n_q,). Ranks come from one sort of (query, score) keys:
    scores are replaced by their dense rank so that ties stay exact.
    Returns ap (n_q,), hits (n_q, len(TOPK)), count_tp (n_q,), top lists.
    """
    size = s.size
    seg = np.searchsorted(qid, np.arange(n_q + 1))
    tq = qid[tp_pos]
    count_tp = np.bincount(tq, minlength=n_q)
    ap = np.zeros(n_q)
    hits = np.zeros((n_q, len(TOPK)), dtype=bool)
    top = [[] for _ in range(n_q)]
    if size == 0:
        return ap, hits, count_tp, top
    if not keep_top:
        # only the items scoring at least their query's lowest true positive
        # affect AP and top-k: drop the others before sorting (order kept)
        thr = np.full(n_q, np.inf)
        np.minimum.at(thr, tq, s[tp_pos])
        keep = s >= thr[qid]
        if not keep.all():
            new_pos = np.cumsum(keep) - 1
            s, qid, tp_pos = s[keep], qid[keep], new_pos[tp_pos]
            size = s.size
            if size == 0:
                return ap, hits, count_tp, top
            seg = np.searchsorted(qid, np.arange(n_q + 1))
    _, inv = np.unique(s, return_inverse=True)
    m = int(inv.max()) + 1
    key = qid * m + (m - 1 - inv.reshape(-1))  # ascending = by query, then score descending
    if tp_pos.size:
        sorted_key = np.sort(key)
        tkey = key[tp_pos]
        n_ge = np.searchsorted(sorted_key, tkey, side="right") - seg[tq]  # items scoring >= the TP
        tkey_sorted = np.sort(tkey)
        tp_ge = np.searchsorted(tkey_sorted, tkey, side="right") - np.searchsorted(tkey_sorted, tq * m)
        # sklearn AP = (1/#pos) * sum over positives of precision at their threshold
        ap_sum = np.bincount(tq, weights=tp_ge / n_ge, minlength=n_q)
        has = count_tp > 0
        ap[has] = ap_sum[has] / count_tp[has] * (count_tp[has] * 1.0 / count_gt[has])
        # top-k: rank of the best true positive (ties ranked by position)
        best = np.full(n_q, np.iinfo(np.int64).max)
        np.minimum.at(best, tq, tkey)
        first_best = np.full(n_q, size)
        at_best = tkey == best[tq]
        np.minimum.at(first_best, tq[at_best], tp_pos[at_best])
        tied_before = (key == best[qid]) & (np.arange(size) < first_best[qid])
        rank = (
            np.searchsorted(sorted_key, best[has], side="left")
            - seg[:-1][has]
            + np.bincount(qid[tied_before], minlength=n_q)[has]
        )
        hits[has] = rank[:, None] < _TOPK_ARR[None, :]
    if keep_top:
        order = np.argsort(key, kind="stable")
        is_tp = np.zeros(size, dtype=bool)
        is_tp[tp_pos] = True
        for q in range(n_q):
            top[q] = order[seg[q] : min(seg[q] + KEEP_TOP, seg[q + 1])]
        return ap, hits, count_tp, (top, is_tp)
    return ap, hits, count_tp, top


def run_search(
    index: GalleryIndex,
    query_feats: np.ndarray,
    tasks: list[SearchTask],
    context: list[np.ndarray] | None = None,
    k1: int = 10,
    chunk: int = 64,
) -> list[SearchResult]:
    """Rank and score every query for every task.

    query_feats: (Q, F) query box features; context: per query the (k2', F)
    CBGM context features (None = no CBGM); k1: CBGM's top detections.
    Returns one SearchResult per task.
    """
    n_q = query_feats.shape[0]
    q_feats = np.asarray(query_feats, dtype=np.float64)
    results = [
        SearchResult(
            np.zeros(n_q),
            np.zeros((n_q, len(TOPK)), bool),
            np.zeros(n_q, np.int64),
            np.asarray(task.count_gt, np.int64),
            [[] for _ in range(n_q)],
        )
        for task in tasks
    ]
    per_query = []
    for task, res in zip(tasks, results):
        if task.dense or task.flat is None:
            per_query.append((task, res))
        else:
            _run_batched(index, q_feats, task, res, context, k1)
    if per_query:
        _run_per_query(index, q_feats, per_query, context, k1, chunk)
    return results


def _run_per_query(index, q_feats, pairs, context, k1, chunk):
    """Dense tasks: one matrix product per chunk of queries, then query by query."""
    n_q = q_feats.shape[0]
    prepared = []
    for task, res in pairs:
        m_q, m_pair, m_det = _matches(index, task)
        prepared.append((task, m_pair, m_det, np.searchsorted(m_q, np.arange(n_q + 1)), res))
    any_dense = any(t.dense for t, _ in pairs)
    for c0 in range(0, n_q, chunk):
        c1 = min(n_q, c0 + chunk)
        sims = q_feats[c0:c1] @ index.feats.T if any_dense else None
        for q in range(c0, c1):
            for task, m_pair, m_det, bounds, res in prepared:
                gdet = task.candidates(q)
                if not task.dense:
                    s = index.feats[gdet] @ q_feats[q]
                elif task.excluded_range is not None:
                    cut_lo, cut_hi = task.excluded_range(q)
                    s = np.concatenate((sims[q - c0, :cut_lo], sims[q - c0, cut_hi:]))
                else:
                    s = sims[q - c0, gdet]
                if context is not None:
                    cbgm_revise(s, gdet, index.det_img, index.start, index.count, index.feats, context[q], k1)
                lo, hi = bounds[q], bounds[q + 1]
                ap, hits, n_tp, top = _score_query(s, gdet, m_pair[lo:hi], m_det[lo:hi], res.count_gt[q], task.keep_top)
                res.ap[q], res.hits[q], res.count_tp[q] = ap, hits, n_tp
                res.top[q] = top


def _run_batched(index, q_feats, task, res, context, k1, chunk=256):
    """Sparse tasks with flat candidate lists: similarities query by query
    (gathered product), everything else a chunk of queries at a time."""
    n_q = q_feats.shape[0]
    cand_det, offsets = task.flat
    n_det = max(index.det_img.size, 1)
    m_q, m_pair, m_det = _matches(index, task)
    # position of every matching detection in the flat candidate array
    # (keys query * n_det + detection increase along it)
    cand_q = np.repeat(np.arange(n_q), np.diff(offsets))  # query of every flat candidate
    m_pos = np.searchsorted(cand_q * n_det + cand_det, m_q * n_det + m_det)
    m_bounds = np.searchsorted(m_q, np.arange(n_q + 1))
    buf = np.empty((int(np.diff(offsets).max(initial=0)), index.feats.shape[1]))
    for c0 in range(0, n_q, chunk):
        c1 = min(n_q, c0 + chunk)
        a, b = offsets[c0], offsets[c1]
        gdet = cand_det[a:b]
        s = np.empty(b - a)
        for q in range(c0, c1):
            lo, hi = offsets[q] - a, offsets[q + 1] - a
            # gather into a reused buffer (no allocation, no page faults), then one gemv
            rows = buf[: hi - lo]
            np.take(index.feats, gdet[lo:hi], axis=0, out=rows, mode="clip")  # indices are valid
            np.dot(rows, q_feats[q], out=s[lo:hi])
            if context is not None:
                cbgm_revise(s[lo:hi], gdet[lo:hi], index.det_img, index.start, index.count, index.feats, context[q], k1)
        ml, mh = m_bounds[c0], m_bounds[c1]
        pos = m_pos[ml:mh] - a
        _, first = segment_first_argmax(s[pos], m_pair[ml:mh])
        tp_pos = np.sort(pos[first])
        qid = cand_q[a:b] - c0
        ap, hits, n_tp, top = _score_batch(s, qid, c1 - c0, tp_pos, res.count_gt[c0:c1], task.keep_top)
        res.ap[c0:c1], res.hits[c0:c1], res.count_tp[c0:c1] = ap, hits, n_tp
        if task.keep_top:
            order_lists, is_tp = top
            for j, positions in enumerate(order_lists):
                res.top[c0 + j] = [(int(gdet[p]), float(s[p]), bool(is_tp[p])) for p in positions.tolist()]
