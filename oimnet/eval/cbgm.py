"""Context bipartite graph matching (CBGM) for one query's ranking.

For the gallery images holding the k1 most similar detections, the query
image's first k2 detections (query box first) are matched to the image's
detections by maximum total cosine similarity (``linear_sum_assignment``,
rectangular graphs allowed). If the query box is matched, its partner's
similarity becomes the largest matched edge weight.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .segments import ranges_concat

__all__ = ["top_k_positions", "cbgm_revise"]


def top_k_positions(s: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, as ``argsort(s, kind='stable')[-k:]``
    selects them (among ties at the boundary the later positions), in O(n).

    s: (n,) float. Returns an unordered int64 array of min(k, n) positions.
    """
    n = s.size
    if n <= k:
        return np.arange(n)
    v = np.partition(s, n - k)[n - k]
    above = np.flatnonzero(s > v)
    ties = np.flatnonzero(s == v)
    return np.concatenate([above, ties[ties.size - (k - above.size) :]])


def cbgm_revise(
    s: np.ndarray,
    gdet: np.ndarray,
    det_img: np.ndarray,
    img_start: np.ndarray,
    img_count: np.ndarray,
    feats: np.ndarray,
    context: np.ndarray,
    k1: int,
) -> None:
    """Revise similarities in place.

    s: (n,) float64 similarities of the ranked detections; gdet: (n,) their
    ascending global detection indices (so each image's detections are
    contiguous in s); det_img / img_start / img_count: detection -> image and
    image -> detection range of the global arrays; feats: (D, F) global
    features; context: (k2', F) features of the query image's first k2
    detections, row 0 = the query box.
    """
    if s.size == 0 or context.shape[0] == 0:
        return
    imgs = np.unique(det_img[gdet[top_k_positions(s, k1)]])
    starts, counts = img_start[imgs], img_count[imgs]
    weights = context @ feats[ranges_concat(starts, counts)].T  # (k2', sum(counts))
    local = np.searchsorted(gdet, starts)
    edges = np.concatenate(([0], np.cumsum(counts)))
    for j in range(imgs.size):
        w = weights[:, edges[j] : edges[j + 1]]
        rows, cols = linear_sum_assignment(w, maximize=True)
        if rows.size and rows[0] == 0:  # rows come sorted; 0 = query box matched
            s[local[j] + cols[0]] = w[rows, cols].max()
