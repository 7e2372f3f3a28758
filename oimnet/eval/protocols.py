"""Candidate sets and positives of the CUHK-SYSU and PRW search protocols.

PRW (and the synthetic set): every gallery frame except the query frame is a
candidate ("multi-view": only frames of other cameras); a candidate frame is
positive when it holds a box with the query's pid (the first such box is the
GT). CUHK-SYSU: the protocol list of the query (TestG{N}) gives the candidate
images and the GT box of those that contain the person; the full set
(gallery_size -1) takes every gallery image but the query's,
with positives from the gallery records' pids.
"""

from __future__ import annotations

from itertools import chain, repeat

import numpy as np

from oimnet.constants import UNLABELED_PID

from .search import GalleryIndex, SearchTask
from .segments import ranges_concat

__all__ = ["prw_task", "cuhk_task", "cuhk_full_set_task", "has_test_pids"]


def _query_pid(rec: dict, q: int) -> int:
    pids = np.asarray(rec["pids"]).reshape(-1)
    if pids.size != 1:
        raise ValueError(f"query {q} ({rec['img_name']}): expected exactly one pid, got {pids.size}")
    return int(pids[0])


def _positives(pos: list[tuple[int, int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not pos:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4))
    q, img, box = zip(*pos)
    return np.array(q, np.int64), np.array(img, np.int64), np.asarray(box, dtype=np.float64).reshape(-1, 4)


def _pid_index(gallery: list[dict]) -> dict[int, list[tuple[int, np.ndarray]]]:
    """pid -> [(gallery image, first box of that pid in it)] in gallery order."""
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, rec in enumerate(gallery):
        pids = np.asarray(rec["pids"]).reshape(-1)
        boxes = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
        seen = set()
        for j, p in enumerate(pids.tolist()):
            if p not in seen:
                seen.add(p)
                out.setdefault(p, []).append((i, boxes[j]))
    return out


def has_test_pids(query: list[dict]) -> bool:
    """True when every query record carries a real identity (not a dummy pid)."""
    for rec in query:
        pids = np.asarray(rec["pids"]).reshape(-1)
        if pids.size != 1 or pids[0] <= 0 or pids[0] == UNLABELED_PID:
            return False
    return True


def prw_task(
    index: GalleryIndex, gallery: list[dict], query: list[dict], multi_view: bool = False, keep_top: bool = False
) -> SearchTask:
    """The PRW protocol (standard, or cross-camera when multi_view)."""
    cams = np.array([int(r.get("cam_id", -1)) for r in gallery], dtype=np.int64)
    det_cam = cams[index.det_img]
    by_pid = _pid_index(gallery)
    n_det = index.det_img.size
    q_img = np.array([index.pos_of.get(r["img_name"], -1) for r in query], dtype=np.int64)
    q_cam = np.array([int(r.get("cam_id", -1)) for r in query], dtype=np.int64)

    pos, count_gt = [], np.zeros(len(query), np.int64)
    for q, rec in enumerate(query):
        pid = _query_pid(rec, q)
        for img, box in by_pid.get(pid, []):
            if img == q_img[q] or (multi_view and cams[img] == q_cam[q]):
                continue
            pos.append((q, img, box))
            count_gt[q] += 1

    other_cam: dict[int, np.ndarray] = {}

    def candidates(q: int) -> np.ndarray:
        if multi_view:
            cam = int(q_cam[q])
            if cam not in other_cam:
                other_cam[cam] = np.flatnonzero(det_cam != cam)
            gdet = other_cam[cam]
            if q_img[q] >= 0 and cams[q_img[q]] != cam:  # query frame filed under another camera
                gdet = gdet[index.det_img[gdet] != q_img[q]]
            return gdet
        lo, hi = excluded_range(q)
        return np.concatenate((all_dets[:lo], all_dets[hi:]))

    def excluded_range(q: int) -> tuple[int, int]:
        """Detections of the query frame (empty when it is not a gallery frame)."""
        if q_img[q] < 0:
            return 0, 0
        lo = int(index.start[q_img[q]])
        return lo, lo + int(index.count[q_img[q]])

    all_dets = np.arange(n_det)
    return SearchTask(
        candidates,
        *_positives(pos),
        count_gt,
        dense=True,
        keep_top=keep_top,
        excluded_range=None if multi_view else excluded_range,
    )


def cuhk_full_set_task(
    index: GalleryIndex, gallery: list[dict], query: list[dict], keep_top: bool = False
) -> SearchTask:
    """CUHK-SYSU full set from the records: every gallery image but the
    query's own is a candidate; positives are the images holding the query's
    pid (the test identity), as in TestG50."""
    for q, rec in enumerate(query):
        pid = _query_pid(rec, q)
        if pid <= 0 or pid == UNLABELED_PID:
            raise ValueError(
                f"query {q} ({rec['img_name']}) has pid {pid}: the CUHK-SYSU full set needs the test "
                "identity in the query records, or a protocol list (load_cuhk_protocol(root, -1))"
            )
    return prw_task(index, gallery, query, multi_view=False, keep_top=keep_top)


def cuhk_task(index: GalleryIndex, query: list[dict], protocol: list[list[dict]], keep_top: bool = False) -> SearchTask:
    """The CUHK-SYSU protocol from per-query gallery lists.

    protocol[q]: [{"img_name": str, "box": (4,) x1y1x2y2 or None}] (the
    person is in the image when box is not None). Duplicated names count once.
    """
    if len(protocol) != len(query):
        raise ValueError(f"CUHK-SYSU protocol has {len(protocol)} query entries but there are {len(query)} queries")
    n_q, n_img = len(query), max(len(index.names), 1)
    # every entry of every list, flat: entry k belongs to query ent_q[k]
    flat = list(chain.from_iterable(protocol))
    ent_q = np.repeat(np.arange(n_q, dtype=np.int64), np.fromiter(map(len, protocol), np.int64, n_q))
    idx = np.fromiter(map(index.pos_of.get, [e["img_name"] for e in flat], repeat(-1)), np.int64, len(flat))
    if idx.size and idx.min() < 0:
        k = int(np.argmax(idx < 0))
        q = int(ent_q[k])
        raise ValueError(
            f"CUHK-SYSU protocol, query {q} ({query[q]['img_name']}): gallery image "
            f"{flat[k]['img_name']!r} is not among the gallery records"
        )
    keys = ent_q * n_img + idx
    # positives: the first entry with a box of each (query, image), in list order
    boxed = [k for k, e in enumerate(flat) if e.get("box") is not None]
    boxed = np.asarray(boxed, dtype=np.int64)
    _, first = np.unique(keys[boxed], return_index=True)
    sel = boxed[np.sort(first)]
    pos_q, pos_img = ent_q[sel], idx[sel]
    boxes = [flat[k]["box"] for k in sel.tolist()]
    try:  # usually (4,) arrays: stack them in one go
        pos_box = np.asarray(boxes, dtype=np.float64)
    except ValueError:  # ragged shapes
        pos_box = None
    if pos_box is None or pos_box.shape != (len(boxes), 4):
        pos_box = np.asarray([np.asarray(b, dtype=np.float64).reshape(4) for b in boxes], dtype=np.float64).reshape(
            -1, 4
        )
    count_gt = np.bincount(pos_q, minlength=n_q).astype(np.int64)
    # (query, image) pairs, duplicates dropped, sorted by query then gallery order
    pairs = np.sort(keys)
    if pairs.size:
        pairs = pairs[np.append(True, pairs[1:] != pairs[:-1])]
    pair_q, all_imgs = np.divmod(pairs, n_img)
    list_len = np.bincount(pair_q, minlength=len(query))
    dense = list_len.mean() * 4 > n_img if len(query) else False

    # all candidates of all queries, flat: query q owns cand_det[offsets[q]:offsets[q+1]]
    n_cand = np.bincount(pair_q, weights=index.count[all_imgs], minlength=len(query)).astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(n_cand)))
    cand_det = ranges_concat(index.start[all_imgs], index.count[all_imgs])

    def candidates(q: int) -> np.ndarray:
        return cand_det[offsets[q] : offsets[q + 1]]

    return SearchTask(
        candidates, pos_q, pos_img, pos_box, count_gt, dense=dense, keep_top=keep_top, flat=(cand_det, offsets)
    )
