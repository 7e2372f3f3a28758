"""analysis/stats.py against scipy.stats and textbook numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.stats import describe, paired

# Student's sleep data (Cushny & Peebles, as in R's `sleep`): extra hours of
# sleep of 10 patients under two drugs; the paired t-test gives t = -4.0621,
# df = 9, p = 0.002833 and a 95 % CI of the mean difference [-2.4598, -0.7002].
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_describe_equals_scipy_t_interval():
    x = np.array([0.31, 0.35, 0.29, 0.40, 0.33])
    d = describe(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert d.n == 5
    assert d.mean == pytest.approx(x.mean(), abs=1e-15)
    assert d.std == pytest.approx(x.std(ddof=1), abs=1e-15)
    assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_describe_two_values_and_one():
    # n = 2: t(0.975, 1) = 12.7062, std of (0.3, 0.4) = 0.070711
    d = describe([0.3, 0.4])
    assert d.half_width == pytest.approx(12.7062047 * 0.0707107 / math.sqrt(2), rel=1e-6)
    one = describe([0.5])
    assert one.n == 1 and one.mean == 0.5 and one.std == 0.0 and math.isnan(one.ci_low)


def test_paired_equals_scipy_and_textbook_sleep_data():
    a = {str(i + 1): v for i, v in enumerate(DRUG1)}
    b = {str(i + 1): v for i, v in enumerate(DRUG2)}
    pr = paired(a, b)
    ref = stats.ttest_rel(DRUG1, DRUG2)
    assert pr.n == 10
    assert pr.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert pr.p_value == pytest.approx(0.002833, abs=2e-6)
    assert pr.diff.mean == pytest.approx(-1.58, abs=1e-12)
    assert (pr.diff.ci_low, pr.diff.ci_high) == pytest.approx((-2.4598, -0.7002), abs=1e-4)
    assert pr.significant()


def test_paired_uses_only_shared_seeds():
    pr = paired({"1": 0.5, "2": 0.6, "3": 0.7, "9": 5.0}, {"1": 0.4, "2": 0.45, "3": 0.65})
    assert pr.seeds == ("1", "2", "3")
    ref = stats.ttest_rel([0.5, 0.6, 0.7], [0.4, 0.45, 0.65])
    assert pr.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert not pr.significant()  # p = 0.074


def test_paired_degenerate_cases():
    assert math.isnan(paired({"1": 0.5}, {"1": 0.4}).p_value)  # one seed: no test
    assert math.isnan(paired({"1": 0.5, "2": 0.6}, {"1": 0.5, "2": 0.6}).p_value)  # identical
    # the same shift on every seed (0.1 and 0.09999999999999998 in floats): no spread, no test
    same = paired({"1": 0.5, "2": 0.6}, {"1": 0.4, "2": 0.5})
    assert same.same_shift and math.isnan(same.p_value) and not same.significant()
    assert not paired({"1": 0.5, "2": 0.6}, {"1": 0.4, "2": 0.45}).same_shift
    assert paired({"1": 0.5}, {"2": 0.4}).n == 0


def test_error_bars_stop_at_0_and_100_percent():
    from analysis.plots import clipped_yerr

    yerr = clipped_yerr([1.5, 50.0, 99.0, float("nan")], [12.0, 10.0, 4.0, 0.0])
    assert yerr.tolist() == [[1.5, 10.0, 4.0, 0.0], [12.0, 10.0, 1.0, 0.0]]
