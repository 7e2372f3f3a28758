"""Group-by helpers over contiguous segments of a flat array."""

from __future__ import annotations

import numpy as np

__all__ = ["segment_first_argmax", "ranges_concat"]


def segment_first_argmax(values: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the position of its largest value (first one on ties).

    values: (n,) float; seg: (n,) int segment ids, non-decreasing (each
    segment contiguous). Returns (segment ids present, ascending;
    index into values of each segment's first maximum).
    """
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.empty(seg.size, dtype=bool)
    new[0] = True
    np.not_equal(seg[1:], seg[:-1], out=new[1:])
    if new.all():  # every segment has one element
        return seg, np.arange(seg.size)
    starts = np.flatnonzero(new)
    seg_max = np.maximum.reduceat(values, starts)
    lengths = np.diff(starts, append=values.size)
    is_max = np.flatnonzero(values == np.repeat(seg_max, lengths))
    seg_of = seg[is_max]
    first = np.append(True, seg_of[1:] != seg_of[:-1])  # first maximum of each segment
    return seg_of[first], is_max[first]


def ranges_concat(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c): (sum(counts),) int64."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(counts) - counts  # where each range begins in the output
    return np.repeat(starts - offsets, counts) + np.arange(total, dtype=np.int64)
