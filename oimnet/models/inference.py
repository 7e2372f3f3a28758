"""Run a model over the test split and collect the release's eval cache.

Cache (one entry per image, dataset order):
  gallery_dets    list of float32 (n, 5): x1, y1, x2, y2 (original pixels), score
  gallery_feats   list of float32 (n, 256)
  query_dets      list of float32 (m, 5): the query image run as a gallery
                  image, the query box first (score 1)
  query_feats     list of float32 (m, 256)
  query_box_feats list of float32 (256,): embedding of each query box
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["compute_eval_cache", "detections_array"]


def detections_array(boxes: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
    """(n, 4) boxes (original pixels, as the model returns them) and (n,) scores -> float32 (n, 5)."""
    dets = torch.cat([boxes.float(), scores.float().reshape(-1, 1)], dim=1)
    return dets.cpu().numpy().astype(np.float32)


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{**t, "boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    return images, targets


@torch.no_grad()
def _gallery(model, cfg, device, loader) -> tuple[list, list]:
    dets, feats = [], []
    for images, targets in tqdm(loader, desc="gallery", ncols=80, leave=False):
        images, targets = _to_device(images, targets, device)
        if cfg.EVAL_USE_GT:
            embeddings = model.embed_boxes(images, [t["boxes"] for t in targets])
            outputs = [
                {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"]), device=device), "embeddings": e}
                for t, e in zip(targets, embeddings)
            ]
        else:
            outputs = model(images)
        for out in outputs:
            dets.append(detections_array(out["boxes"], out["scores"]))
            feats.append(out["embeddings"].float().cpu().numpy())
    return dets, feats


@torch.no_grad()
def _query(model, device, loader) -> tuple[list, list, list]:
    dets, feats, box_feats = [], [], []
    for images, targets in tqdm(loader, desc="query", ncols=80, leave=False):
        images, targets = _to_device(images, targets, device)
        for i, t in enumerate(targets):
            if len(t["boxes"]) != 1:
                raise ValueError(
                    f"query image {t.get('img_name', i)!r}: expected exactly one query box, got {len(t['boxes'])}"
                )
        outputs = model(images, query_boxes=[t["boxes"] for t in targets])
        for out in outputs:
            dets.append(detections_array(out["boxes"], out["scores"]))
            emb = out["embeddings"].float().cpu().numpy()
            feats.append(emb)
            # the first detection is the query box, embedded from the box itself
            box_feats.append(emb[0].copy())
    return dets, feats, box_feats


def compute_eval_cache(model, cfg, device, records: tuple[list, list] | None = None) -> dict:
    """Gallery detections/features and query features of the test split
    (or of ``records`` = (gallery records, query records), e.g. a validation split).

    ``cfg.EVAL_USE_GT``: gallery detections are the ground-truth boxes with
    score 1, embedded from the boxes. Runs under no_grad in eval mode on
    ``device``; restores the model's train/eval mode afterwards.
    """
    from oimnet.data import build_test_loader

    was_training = model.training
    model.eval()
    model.to(device)
    try:
        gallery_recs, query_recs = records if records is not None else (None, None)
        gallery_dets, gallery_feats = _gallery(model, cfg, device, build_test_loader(cfg, "gallery", gallery_recs))
        query_dets, query_feats, query_box_feats = _query(model, device, build_test_loader(cfg, "query", query_recs))
    finally:
        model.train(was_training)
    return {
        "gallery_dets": gallery_dets,
        "gallery_feats": gallery_feats,
        "query_dets": query_dets,
        "query_feats": query_feats,
        "query_box_feats": query_box_feats,
    }
