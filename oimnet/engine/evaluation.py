"""Evaluate a model on the test split of its dataset: eval cache, metrics, results JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("oimnet")

# Scalar metrics copied from an evaluation into MLflow and the Ray report.
SCALAR_KEYS = (
    "mAP",
    "top1",
    "top5",
    "top10",
    "det_ap",
    "det_recall",
    "det_ap_labeled",
    "det_recall_labeled",
    "mAP_multiview",
    "top1_multiview",
)


def scalar_metrics(result: dict) -> dict[str, float]:
    return {k: float(result[k]) for k in SCALAR_KEYS if k in result and result[k] is not None}


def load_eval_records(cfg):
    """(gallery records, query records, CUHK protocol or None) of cfg's dataset."""
    from oimnet.data import load_cuhk_protocol, load_records

    ds, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
    gallery = load_records(ds, root, "gallery")
    query = load_records(ds, root, "query")
    # The full set (-1) is scored from the records' test pids: its per-query
    # lists (2,900 x ~6,978 entries on CUHK-SYSU) are never built.
    size = int(cfg.EVAL_GALLERY_SIZE)
    protocol = load_cuhk_protocol(root, size) if ds == "CUHK-SYSU" and size != -1 else None
    return gallery, query, protocol


@torch.no_grad()
def evaluate_model(model, cfg, device, out_dir: str | Path, tag: str = "final") -> dict:
    """Run the model over gallery and query, score the protocol, write files.

    Writes ``eval_cache.pth`` (the release's cache format) and
    ``results_<tag>.json`` (+ ``results.json``, the latest) in out_dir.
    Returns the full result dict (scalars + per-query top-10).
    """
    from oimnet.eval import evaluate_cache, save_cache, write_results_json
    from oimnet.models.inference import compute_eval_cache

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        cache = compute_eval_cache(model, cfg, device)
    finally:
        model.train(was_training)
    save_cache(out_dir / "eval_cache.pth", cache)
    gallery, query, protocol = load_eval_records(cfg)
    result = evaluate_cache(cfg, cache, gallery, query, protocol)
    write_results_json(out_dir / f"results_{tag}.json", result)
    write_results_json(out_dir / "results.json", result)
    log.info("evaluation (%s): %s", tag, json.dumps({k: round(v, 4) for k, v in scalar_metrics(result).items()}))
    return result
