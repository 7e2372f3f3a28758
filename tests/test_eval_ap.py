"""Average precision: scikit-learn's definition, ties included."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from oimnet.eval.ap import average_precision, average_precision_from_positives


def test_hand_computed_ranking():
    # ranked: T F T F -> precision at the positives 1 and 2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx((1 + 2 / 3) / 2)


def test_tied_scores_form_one_threshold():
    # positive tied with a negative at the top: precision 1/2 there, whatever the order
    assert average_precision([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.5)
    assert average_precision([0, 1, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.5)


def test_no_positive_is_zero():
    assert average_precision([0, 0], [0.3, 0.2]) == 0.0
    assert average_precision_from_positives(np.array([0.3, 0.2]), np.array([])) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_lists_with_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(1, 80))
        scores = np.round(rng.random(n) * rng.integers(1, 8)) / 7  # many ties
        y = rng.random(n) < rng.uniform(0.05, 0.6)
        if not y.any():
            y[rng.integers(n)] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = average_precision_score(y.astype(int), scores)
        assert average_precision(y, scores) == pytest.approx(expected, abs=1e-12)
        assert average_precision_from_positives(scores, scores[y]) == pytest.approx(expected, abs=1e-12)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        average_precision([1, 0], [0.1, 0.2, 0.3])
