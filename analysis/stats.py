"""Seed statistics of a table cell and paired comparisons between rows.

Everything here is in the units it is given (the tables pass fractions).

* :func:`describe`: n, mean, sample std (ddof 1) and the two-sided 95 %
  confidence interval of the mean from Student's t distribution with n-1
  degrees of freedom: ``mean ± t(0.975, n-1) * std / sqrt(n)``.
* :func:`paired`: a row against the baseline row over the seeds both ran.
  Same seed = same data order, flips and initialisation, so the per-seed
  differences ``d_s = x_s - base_s`` remove what the seed does to both; the
  interval is :func:`describe` of the d_s and the p-value is the two-sided
  paired t-test (``scipy.stats.ttest_rel``), i.e. the chance of a mean
  difference at least this large if the two rows were the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the tables' sentence


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample std (ddof=1); 0.0 for one value
    ci_low: float  # nan for fewer than 2 values
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2 if self.n > 1 else math.nan


def describe(values, confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample std and t-interval of the mean of ``values`` (1-d)."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, 0.0, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    seeds: tuple[str, ...]  # the seeds both rows ran, sorted
    diff: Summary  # of x_s - base_s
    p_value: float  # two-sided paired t-test; nan when undefined (n < 2, or every d_s the same)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def same_shift(self) -> bool:
        """Every seed moved by the same non-zero amount (to rounding): no spread, so no t-test.

        scipy's t is then infinite (p = 0), or huge from float rounding alone;
        with 2-3 seeds of a discrete metric (top-1 over a few dozen queries) it
        happens by chance, and a p-value of 0 would read as certainty.
        """
        return self.n >= 2 and self.diff.mean != 0 and self.diff.std <= 1e-9 * abs(self.diff.mean)

    def significant(self, alpha: float = ALPHA) -> bool:
        return not math.isnan(self.p_value) and self.p_value < alpha


def paired(values: dict[str, float], baseline: dict[str, float], confidence: float = CONFIDENCE) -> Paired:
    """``values`` minus ``baseline`` over their common seeds (dicts seed -> value)."""
    seeds = tuple(sorted(set(values) & set(baseline), key=_seed_key))
    x = np.array([values[s] for s in seeds], dtype=np.float64)
    b = np.array([baseline[s] for s in seeds], dtype=np.float64)
    d = describe(x - b, confidence)
    out = Paired(seeds, d, math.nan)
    if len(seeds) >= 2 and d.std > 0 and not out.same_shift:
        out = Paired(seeds, d, float(_st.ttest_rel(x, b).pvalue))
    return out


def _seed_key(seed: str):
    try:
        return (0, int(seed), "")
    except ValueError:
        return (1, 0, str(seed))
