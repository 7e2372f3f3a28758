"""Average precision exactly as scikit-learn's ``average_precision_score``.

AP = sum over distinct score thresholds t (descending) of
(R(t) - R(t_prev)) * P(t), where P(t) and R(t) are the precision and recall of
"predict positive when score >= t". Equal scores form one threshold, so ties
are handled as scikit-learn handles them (no interpolation). A list without
positives has AP 0 (scikit-learn >= 1.3 also answers 0, with a warning).
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "average_precision_from_positives"]


def average_precision(y_true, y_score) -> float:
    """AP of a ranking.

    y_true: (n,) bool/int, nonzero = positive; y_score: (n,) float.
    Returns a float in [0, 1]; 0.0 when there is no positive.
    """
    y_true = np.asarray(y_true).reshape(-1) != 0
    y_score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"average_precision: {y_true.size} labels but {y_score.size} scores")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="stable")
    s = y_score[order]
    tp = np.cumsum(y_true[order])
    # last index of every run of equal scores = one threshold
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    tp_at = tp[last]
    precision = tp_at / (last + 1.0)
    d_recall = np.diff(tp_at, prepend=0) / n_pos
    return float(np.sum(d_recall * precision))


def average_precision_from_positives(scores: np.ndarray, pos_scores: np.ndarray) -> float:
    """AP of a ranking given all scores and the scores of its positives.

    scores: (n,) float64, every ranked item (positives included);
    pos_scores: (p,) float64, the positives' scores (a sub-multiset of scores).
    Same value as :func:`average_precision`: only the number of items at or
    above each distinct positive score is needed, so only the items scoring at
    least the lowest positive are sorted.
    """
    pos_scores = np.asarray(pos_scores, dtype=np.float64)
    n_pos = pos_scores.size
    if n_pos == 0:
        return 0.0
    if n_pos == 1:  # the common case in CUHK-SYSU: precision at its rank
        return float(1.0 / np.count_nonzero(scores >= pos_scores[0]))
    pos_sorted = np.sort(pos_scores)
    thresholds = pos_sorted[np.append(pos_sorted[1:] != pos_sorted[:-1], True)][::-1]  # distinct, descending
    above = np.sort(scores[scores >= pos_sorted[0]])
    n_ge = above.size - np.searchsorted(above, thresholds, side="left")  # items >= t
    tp_ge = n_pos - np.searchsorted(pos_sorted, thresholds, side="left")  # positives >= t
    precision = tp_ge / n_ge
    d_recall = np.diff(tp_ge, prepend=0) / n_pos
    return float(np.sum(d_recall * precision))
