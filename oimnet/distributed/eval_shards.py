"""Evaluation sharded over the ranks: each runs the predictor on its share of a split, rank 0 scores.

Shards are whole inference batches (``INPUT.BATCH_SIZE_TEST`` records in
record order) dealt round-robin over the ranks: batch j goes to rank
j mod N. A rank's shard loader then forms exactly the batches one process
forms (same images padded to the same canvas), so every image's
detections and embeddings are those of a one-process evaluation, bit for
bit on the same device type. Each rank's ``{record index: ImageResult}`` is
packed into two tensors and gathered to rank 0 (``gather``, no pickling),
where the merged results make the eval cache; the other ranks get None.

Without a multi-rank process group this is the predictor's own one-process
eval cache. Every rank must call :func:`sharded_eval_cache` with the same
config and records (a collective).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from oimnet.distributed.comm import (
    all_reduce_max,
    collective_device,
    gather_rows_to_main,
    get_rank,
    get_world_size,
    is_distributed,
)
from oimnet.models.predictor import ImageResult, Predictor, eval_cache

__all__ = ["shard_indices", "gather_results", "sharded_eval_cache"]


def shard_indices(n_records: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """Record indices of ``rank``'s shard: the batches j (of ``batch_size`` records) with j mod world_size == rank."""
    if batch_size < 1:
        raise ValueError(f"INPUT.BATCH_SIZE_TEST {batch_size}: expected at least 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return [i for i in range(n_records) if (i // batch_size) % world_size == rank]


def _pack(results: Mapping[int, ImageResult], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, 2) int64 [record index, detection count] and (sum of counts, 5 + dim) float32 [box, score, embedding]."""
    order = sorted(results)
    header = torch.tensor([[i, len(results[i].scores)] for i in order], dtype=torch.int64).reshape(-1, 2)
    blocks = [
        np.concatenate([r.boxes.reshape(-1, 4), r.scores.reshape(-1, 1), r.embeddings.reshape(-1, dim)], axis=1)
        for r in (results[i] for i in order)
    ]
    rows = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 5 + dim), np.float32)
    return header, torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


def _unpack(header: torch.Tensor, rows: torch.Tensor) -> dict[int, ImageResult]:
    rows = rows.numpy()
    out: dict[int, ImageResult] = {}
    start = 0
    for index, count in header.tolist():
        block = rows[start : start + count]
        start += count
        if index in out:
            raise RuntimeError(f"sharded evaluation: record {index} came back from two ranks (overlapping shards)")
        out[index] = ImageResult(block[:, :4].copy(), block[:, 4].copy(), block[:, 5:].copy())
    return out


def gather_results(results: Mapping[int, ImageResult]) -> dict[int, ImageResult] | None:
    """Rank 0: the union of every rank's ``{record index: ImageResult}``; other ranks: None (a collective).

    Arrays come back bit-identical (float32 throughout). Without a process
    group, ``results`` itself as a dict.
    """
    if not is_distributed():
        return dict(results)
    # Embedding width: a rank with no image in its shard learns it from the others.
    local_dim = next(iter(results.values())).embeddings.shape[-1] if results else 0
    dim = int(all_reduce_max(torch.tensor([local_dim], dtype=torch.int64, device=collective_device())).item())
    header, rows = _pack(results, dim)
    device = collective_device()
    header = gather_rows_to_main(header.to(device))
    rows = gather_rows_to_main(rows.to(device))
    if header is None:
        return None
    return _unpack(header.cpu(), rows.cpu())


def sharded_eval_cache(
    predictor: Predictor, cfg, records: tuple[Sequence[dict], Sequence[dict]] | None = None
) -> dict | None:
    """The eval cache :meth:`Predictor.eval_cache` gives, computed by every rank on its shard (see the module).

    ``records``: (gallery records, query records), default the test split.
    Returns the cache on rank 0 and None on the other ranks.
    """
    if not is_distributed():
        return predictor.eval_cache(cfg, records)
    from oimnet.data import build_test_loader

    rank, world = get_rank(), get_world_size()
    batch = int(cfg.INPUT.BATCH_SIZE_TEST)
    merged = {}
    for split, recs, use_gt in (
        ("gallery", records[0] if records else None, bool(cfg.EVAL_USE_GT)),
        ("query", records[1] if records else None, False),
    ):
        recs = list(recs) if recs is not None else build_test_loader(cfg, split).dataset.records
        mine = shard_indices(len(recs), batch, rank, world)
        results = predictor.predict_split(cfg, split, recs, mine, use_gt=use_gt, progress=rank == 0) if mine else {}
        merged[split] = gather_results(results)
    if merged["gallery"] is None:
        return None
    return eval_cache(merged["gallery"], merged["query"])
