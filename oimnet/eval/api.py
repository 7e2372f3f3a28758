"""evaluate_cache: every metric of one evaluation from an eval cache."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from oimnet.constants import DATASETS

from .cache import CacheError, check_identity, dataset_identity, normalize_cache
from .detection import detection_metrics
from .protocols import cuhk_full_set_task, cuhk_task, has_test_pids, prw_task
from .search import SEARCH_SCORE_THRESH, build_gallery_index, run_search

__all__ = ["CBGM_K", "DET_SCORE_FLOOR", "evaluate_cache"]

DET_SCORE_FLOOR = 0.01
CBGM_K = {"CUHK-SYSU": (10, 3), "PRW": (30, 4)}  # (k1, k2); synthetic follows PRW


def _cfg(cfg, key, default):
    value = OmegaConf.select(cfg, key, default=default) if OmegaConf.is_config(cfg) else default
    return default if value is None else value


def evaluate_cache(
    cfg,
    cache: dict,
    gallery: list[dict],
    query: list[dict],
    protocol=None,
    *,
    multi_view: bool | None = None,
    gallery_size: int | None = None,
    per_query: bool = True,
    cache_name: str = "eval cache",
) -> dict:
    """Detection and search metrics of an eval cache.

    cfg: uses INPUT.DATASET (synthetic = PRW protocol), EVAL_USE_CBGM,
    EVAL_USE_GT (only reported: with GT the cache simply holds GT boxes with
    score 1), EVAL_GALLERY_SIZE (CUHK-SYSU, default 100, -1 = full set).
    cache: see oimnet.eval.cache (one that records its dataset must match
    INPUT.DATASET and the records, else CacheError); gallery/query: records in cache order;
    protocol: CUHK-SYSU per-query gallery lists (load_cuhk_protocol); needed
    unless gallery_size is -1. multi_view: PRW main metrics on the
    cross-camera variant (both variants are always reported for PRW).
    cache_name: how error messages name the cache (e.g. its path).

    Returns fractions in [0, 1]: det_ap, det_recall, det_ap_labeled,
    det_recall_labeled, mAP, top1, top5, top10 (+ mAP_multiview,
    top{1,5,10}_multiview for PRW), and dataset, use_cbgm, use_gt,
    gallery_size (CUHK-SYSU) / multi_view (PRW), n_gallery, n_queries,
    queries_without_positive, per_query (when asked): per query img_name, box,
    pid, ap, count_gt, count_tp and top10 = [{img_name, box, score, correct}].
    """
    dataset = str(_cfg(cfg, "INPUT.DATASET", "CUHK-SYSU"))
    if dataset not in DATASETS:
        raise ValueError(f"INPUT.DATASET={dataset!r}: expected one of {', '.join(DATASETS)}")
    use_cbgm = bool(_cfg(cfg, "EVAL_USE_CBGM", False))
    is_cuhk = dataset == "CUHK-SYSU"
    if multi_view is None:
        multi_view = bool(_cfg(cfg, "EVAL_MULTI_VIEW", False))
    if gallery_size is None:
        gallery_size = int(_cfg(cfg, "EVAL_GALLERY_SIZE", 100))

    if isinstance(cache, dict) and isinstance(cache.get("dataset"), dict):
        check_identity(cache, dataset_identity(dataset, gallery, query), where=cache_name)
    c = normalize_cache(cache, len(gallery), len(query), where=cache_name)
    k1, k2 = CBGM_K["CUHK-SYSU" if is_cuhk else "PRW"]
    context = None
    if use_cbgm:
        if c["query_feats"] is None:
            raise CacheError(
                f"{cache_name}: EVAL_USE_CBGM needs query_dets and query_feats "
                "(the query images run as gallery images, query box first)"
            )
        context = [np.asarray(f[:k2], dtype=np.float64) for f in c["query_feats"]]

    out: dict = {
        "dataset": dataset,
        "n_gallery": len(gallery),
        "n_queries": len(query),
        "use_cbgm": use_cbgm,
        "use_gt": bool(_cfg(cfg, "EVAL_USE_GT", False)),
    }
    out["det_recall"], out["det_ap"] = detection_metrics(gallery, c["gallery_dets"], DET_SCORE_FLOOR)
    out["det_recall_labeled"], out["det_ap_labeled"] = detection_metrics(
        gallery, c["gallery_dets"], DET_SCORE_FLOOR, labeled_only=True
    )

    index = build_gallery_index(gallery, c["gallery_dets"], c["gallery_feats"], SEARCH_SCORE_THRESH)
    if is_cuhk:
        out["gallery_size"] = gallery_size
        if gallery_size == -1 and (protocol is None or has_test_pids(query)):
            tasks = [cuhk_full_set_task(index, gallery, query, keep_top=per_query)]
        elif protocol is None:
            raise ValueError(
                f"CUHK-SYSU gallery size {gallery_size} needs its protocol list "
                "(oimnet.data.load_cuhk_protocol(root, gallery_size))"
            )
        else:
            tasks = [cuhk_task(index, query, protocol, keep_top=per_query)]
    else:
        out["multi_view"] = bool(multi_view)
        tasks = [
            prw_task(index, gallery, query, multi_view=bool(multi_view), keep_top=per_query),
            prw_task(index, gallery, query, multi_view=not multi_view),
        ]
    results = run_search(index, c["query_box_feats"], tasks, context=context, k1=k1)

    main = results[0]
    out.update(main.summary())
    out["queries_without_positive"] = int(np.sum(main.count_gt == 0))
    if not is_cuhk:
        mv = results[0] if multi_view else results[1]
        out.update({f"{k}_multiview": v for k, v in mv.summary().items()})
    if per_query:
        out["per_query"] = _per_query(index, query, main)
    return out


def _per_query(index, query, res) -> list[dict]:
    rows = []
    for q, rec in enumerate(query):
        rows.append(
            {
                "img_name": rec["img_name"],
                "box": [float(v) for v in np.asarray(rec["boxes"]).reshape(-1)[:4]],
                "pid": int(np.asarray(rec["pids"]).reshape(-1)[0]),
                "ap": float(res.ap[q]),
                "count_gt": int(res.count_gt[q]),
                "count_tp": int(res.count_tp[q]),
                "top10": [
                    {
                        "img_name": index.names[index.det_img[d]],
                        "box": [float(v) for v in index.boxes[d]],
                        "score": score,
                        "correct": bool(ok),
                    }
                    for d, score, ok in res.top[q]
                ],
            }
        )
    return rows
