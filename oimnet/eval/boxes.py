"""Box overlap helpers (boxes as x1, y1, x2, y2 in pixels, float64)."""

from __future__ import annotations

import numpy as np

__all__ = ["paired_iou", "search_iou_threshold"]


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[i] with b[i].

    a, b: (n, 4) x1y1x2y2. Returns (n,) float64; a pair with zero union
    (two degenerate boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(union > 0, iou, 0.0)


def search_iou_threshold(gt: np.ndarray) -> np.ndarray:
    """Per-GT IoU needed for a search hit: min(0.5, w*h / ((w+10)(h+10))).

    gt: (n, 4) x1y1x2y2 -> (n,) float64. Small people get a looser threshold.
    """
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    w = gt[:, 2] - gt[:, 0]
    h = gt[:, 3] - gt[:, 1]
    return np.minimum(0.5, (w * h) / ((w + 10.0) * (h + 10.0)))
