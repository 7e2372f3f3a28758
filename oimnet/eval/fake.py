"""Random person-search worlds and eval caches, for tests, benchmarks and demos.

Nothing here is a model: boxes are drawn at random, each identity has a
random unit "true" embedding, and a detection's feature is that embedding
plus Gaussian noise (renormalized), so rankings are informative but imperfect.
"""

from __future__ import annotations

import numpy as np

from oimnet.constants import UNLABELED_PID

__all__ = ["random_world", "random_cache", "random_cuhk_protocol"]

UNLABELED = UNLABELED_PID


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_world(
    n_frames: int,
    n_queries: int,
    n_ids: int,
    *,
    n_cams: int = 6,
    max_people: int = 6,
    labeled_frac: float = 0.7,
    size=(1920, 1080),
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Gallery and query records (contract of oimnet.data) of a random world.

    Every frame holds 1..max_people people; a person is labeled (pid in
    1..n_ids) with probability labeled_frac, else pid 5555. Queries are
    distinct labeled people whose pid appears in at least two frames; a query
    record is that person's frame with only the query box.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    n_people = rng.integers(1, max_people + 1, n_frames)
    frame = np.repeat(np.arange(n_frames), n_people)
    n = frame.size
    w = rng.uniform(30, 150, n)
    h = np.minimum(w * rng.uniform(2.0, 3.0, n), height - 1)
    x1 = rng.uniform(0, width - w)
    y1 = rng.uniform(0, height - h)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
    pids = np.where(rng.random(n) < labeled_frac, rng.integers(1, n_ids + 1, n), UNLABELED).astype(np.int64)
    cams = rng.integers(1, n_cams + 1, n_frames)
    names = [f"c{c}s1_{i:06d}.jpg" for i, c in enumerate(cams)]
    starts = np.r_[0, np.cumsum(n_people)]
    gallery = [
        {
            "img_name": names[i],
            "img_path": names[i],
            "boxes": boxes[starts[i] : starts[i + 1]],
            "pids": pids[starts[i] : starts[i + 1]],
            "cam_id": int(cams[i]),
        }
        for i in range(n_frames)
    ]

    labeled = np.flatnonzero(pids != UNLABELED)
    frames_per_pid = np.bincount(pids[labeled], minlength=n_ids + 1)  # upper bound of distinct frames
    eligible = labeled[frames_per_pid[pids[labeled]] >= 2]
    if eligible.size < n_queries:
        raise ValueError(f"random_world: only {eligible.size} people can be queries, {n_queries} asked")
    chosen = np.sort(rng.choice(eligible, n_queries, replace=False))
    query = [
        {
            "img_name": names[frame[p]],
            "img_path": names[frame[p]],
            "boxes": boxes[p : p + 1].copy(),
            "pids": pids[p : p + 1].copy(),
            "cam_id": int(cams[frame[p]]),
        }
        for p in chosen
    ]
    return gallery, query


def random_cache(
    gallery: list[dict],
    query: list[dict],
    *,
    dim: int = 256,
    noise: float = 0.12,
    miss_rate: float = 0.1,
    fp_per_frame: float = 1.0,
    low_score_frac: float = 0.15,
    seed: int = 0,
) -> dict:
    """An eval cache (release format, float32 arrays) for the given records.

    Each GT person is detected with probability 1 - miss_rate (box jittered by
    ~5 % of its size); false positives are random boxes with random features;
    a fraction low_score_frac of the detections score below 0.5. Detections
    of a frame are sorted by score, as a detector returns them. The query
    image's detections start with the query box (score 1).
    """
    rng = np.random.default_rng(seed)
    n_ids = max([int(p) for r in gallery for p in r["pids"] if p != UNLABELED] + [1])
    true_emb = _unit(rng.standard_normal((n_ids + 1, dim)))

    def features(pids: np.ndarray) -> np.ndarray:
        base = np.where(
            (pids != UNLABELED)[:, None],
            true_emb[np.minimum(pids, n_ids)],
            _unit(rng.standard_normal((pids.size, dim))),
        )
        return _unit(base + noise * rng.standard_normal((pids.size, dim))).astype(np.float32)

    def jitter(boxes: np.ndarray) -> np.ndarray:
        wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        return (boxes + 0.05 * wh * rng.standard_normal(boxes.shape)).astype(np.float32)

    gdets, gfeats = [], []
    for rec in gallery:
        gt = np.asarray(rec["boxes"], dtype=np.float32)
        hit = rng.random(len(gt)) >= miss_rate
        n_fp = rng.poisson(fp_per_frame)
        fp_w = rng.uniform(30, 150, n_fp)
        fp_xy = rng.uniform(0, 1500, (n_fp, 2))
        fp = np.stack([fp_xy[:, 0], fp_xy[:, 1], fp_xy[:, 0] + fp_w, fp_xy[:, 1] + 2.5 * fp_w], 1)
        boxes = np.concatenate([jitter(gt[hit]), fp.astype(np.float32)])
        ids = np.concatenate([np.asarray(rec["pids"])[hit], np.full(n_fp, UNLABELED)])
        scores = np.where(
            rng.random(len(boxes)) < low_score_frac,
            rng.uniform(0.01, 0.5, len(boxes)),
            rng.uniform(0.5, 1.0, len(boxes)),
        )
        order = np.argsort(-scores, kind="stable")
        gdets.append(np.concatenate([boxes, scores[:, None]], 1)[order].astype(np.float32))
        gfeats.append(features(ids)[order])

    by_name = {r["img_name"]: r for r in gallery}
    qdets, qfeats, qbox = [], [], []
    for rec in query:
        qb = np.asarray(rec["boxes"], dtype=np.float32).reshape(1, 4)
        qp = np.asarray(rec["pids"]).reshape(1)
        frame = by_name.get(rec["img_name"], {"boxes": np.zeros((0, 4), np.float32), "pids": np.zeros(0, np.int64)})
        others = ~np.all(np.isclose(np.asarray(frame["boxes"]), qb), axis=1)
        boxes = np.concatenate([qb, jitter(np.asarray(frame["boxes"], np.float32)[others])])
        ids = np.concatenate([qp, np.asarray(frame["pids"])[others]])
        scores = np.r_[1.0, rng.uniform(0.5, 1.0, len(boxes) - 1)]
        qdets.append(np.concatenate([boxes, scores[:, None]], 1).astype(np.float32))
        f = features(ids)
        qfeats.append(f)
        qbox.append(f[0].copy())
    return {
        "gallery_dets": gdets,
        "gallery_feats": gfeats,
        "query_dets": qdets,
        "query_feats": qfeats,
        "query_box_feats": qbox,
    }


def random_cuhk_protocol(gallery: list[dict], query: list[dict], gallery_size: int, seed: int = 0) -> list[list[dict]]:
    """TestG{gallery_size}-like lists: per query the other frames holding its
    pid (with the GT box), then random frames without it up to gallery_size
    (-1: every other frame). Entries as load_cuhk_protocol returns them."""
    rng = np.random.default_rng(seed)
    names = [r["img_name"] for r in gallery]
    first_box: dict[int, dict[int, np.ndarray]] = {}
    for i, rec in enumerate(gallery):
        for b, p in zip(np.asarray(rec["boxes"]), np.asarray(rec["pids"]).tolist()):
            if p != UNLABELED:
                first_box.setdefault(p, {}).setdefault(i, b)
    out = []
    for rec in query:
        pid = int(np.asarray(rec["pids"]).reshape(-1)[0])
        pos = {i: b for i, b in first_box.get(pid, {}).items() if names[i] != rec["img_name"]}
        entries = [{"img_name": names[i], "box": b.astype(np.float64)} for i, b in pos.items()]
        if gallery_size == -1:
            neg = [i for i in range(len(names)) if i not in pos and names[i] != rec["img_name"]]
        else:
            need = max(gallery_size - len(entries), 0)
            pool = rng.choice(len(names), min(len(names), need + len(pos) + 2), replace=False)
            neg = [int(i) for i in pool if int(i) not in pos and names[i] != rec["img_name"]][:need]
        entries += [{"img_name": names[i], "box": None} for i in neg]
        out.append(entries)
    return out
