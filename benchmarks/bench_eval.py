"""Benchmarks of the evaluation: vectorized oimnet.eval vs the loop oracle.

eval_prw:  full PRW protocol (all cameras), 2,057 queries x 6,112 frames.
eval_cuhk: CUHK-SYSU gallery size 100, 2,900 queries, 6,978 gallery images.
Both on random worlds of that size (oimnet.eval.fake); quick=True divides the
sizes by ten. Timed: ranking + scoring of every query (detection metrics and
cache generation excluded; the fast path after one untimed warm-up run, the
oracle once); ``full_evaluate_s`` is the whole evaluate_cache (detection
metrics, both PRW variants, per-query top-10) for reference.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from oimnet.eval import evaluate_cache  # noqa: E402
from oimnet.eval.fake import random_cache, random_cuhk_protocol, random_world  # noqa: E402
from oimnet.eval.protocols import cuhk_task, prw_task  # noqa: E402
from oimnet.eval.search import build_gallery_index, run_search  # noqa: E402

TOL = 1e-9


def _agree(fast, ref) -> tuple[bool, float]:
    ap_f = fast.ap
    ap_r = np.array([p[0] for p in ref["per_query"]])
    hits_r = np.array([p[1] for p in ref["per_query"]], dtype=bool)
    diff = float(np.max(np.abs(ap_f - ap_r))) if ap_f.size else 0.0
    summ = fast.summary()
    same = (
        diff <= TOL
        and np.array_equal(fast.hits, hits_r)
        and all(abs(summ[k] - ref[k]) <= TOL for k in ("mAP", "top1", "top5", "top10"))
    )
    return bool(same), diff


def _timed(fn, warmup: bool = False):
    """(fn(), seconds); warmup: run once untimed first (page faults, caches)."""
    if warmup:
        fn()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def eval_prw(quick: bool = False) -> dict:
    from reference_eval import ref_search_prw

    div = 10 if quick else 1
    n_frames, n_queries = 6112 // div, 2057 // div
    (gallery, query), gen_s = _timed(lambda: random_world(n_frames, n_queries, max(450 // div, 20), seed=0))
    cache, gen2 = _timed(lambda: random_cache(gallery, query, noise=0.12, seed=1))

    def fast():
        index = build_gallery_index(gallery, cache["gallery_dets"], cache["gallery_feats"])
        task = prw_task(index, gallery, query, multi_view=False)
        return run_search(index, np.asarray(cache["query_box_feats"]), [task])[0]

    res, fast_s = _timed(fast, warmup=True)
    ref, ref_s = _timed(lambda: ref_search_prw(gallery, query, cache))
    cfg = OmegaConf.create({"INPUT": {"DATASET": "PRW"}})
    full, full_s = _timed(lambda: evaluate_cache(cfg, cache, gallery, query))
    agree, diff = _agree(res, ref)
    n_det = int(sum(int((np.asarray(d)[:, 4] >= 0.5).sum()) for d in cache["gallery_dets"]))
    return {
        "name": "eval_prw",
        "reference_s": ref_s,
        "fast_s": fast_s,
        "speedup": ref_s / fast_s,
        "agree": agree,
        "max_ap_diff": diff,
        "queries": n_queries,
        "frames": n_frames,
        "detections_searched": n_det,
        "mAP": full["mAP"],
        "top1": full["top1"],
        "full_evaluate_s": full_s,
        "generate_s": gen_s + gen2,
    }


def eval_cuhk(quick: bool = False) -> dict:
    from reference_eval import ref_search_cuhk

    div = 10 if quick else 1
    n_frames, n_queries, size = 6978 // div, 2900 // div, 100
    (gallery, query), gen_s = _timed(lambda: random_world(n_frames, n_queries, max(5000 // div, 50), seed=2))
    cache, gen2 = _timed(lambda: random_cache(gallery, query, noise=0.12, seed=3))
    protocol, gen3 = _timed(lambda: random_cuhk_protocol(gallery, query, size, seed=4))

    def fast():
        index = build_gallery_index(gallery, cache["gallery_dets"], cache["gallery_feats"])
        task = cuhk_task(index, query, protocol)
        return run_search(index, np.asarray(cache["query_box_feats"]), [task])[0]

    res, fast_s = _timed(fast, warmup=True)
    ref, ref_s = _timed(lambda: ref_search_cuhk(gallery, query, cache, protocol))
    cfg = OmegaConf.create({"INPUT": {"DATASET": "CUHK-SYSU"}, "EVAL_GALLERY_SIZE": size})
    full, full_s = _timed(lambda: evaluate_cache(cfg, cache, gallery, query, protocol))
    agree, diff = _agree(res, ref)
    return {
        "name": "eval_cuhk",
        "reference_s": ref_s,
        "fast_s": fast_s,
        "speedup": ref_s / fast_s,
        "agree": agree,
        "max_ap_diff": diff,
        "queries": n_queries,
        "gallery_images": n_frames,
        "gallery_size": size,
        "mAP": full["mAP"],
        "top1": full["top1"],
        "full_evaluate_s": full_s,
        "generate_s": gen_s + gen2 + gen3,
    }


BENCHMARKS = {"eval_prw": eval_prw, "eval_cuhk": eval_cuhk}
