"""The eval benchmarks run (quick size) and agree with the loop oracle."""

import pytest

from benchmarks.bench_eval import BENCHMARKS


@pytest.mark.parametrize("name", ["eval_prw", "eval_cuhk"])
def test_quick_benchmark_agrees(name):
    out = BENCHMARKS[name](True)
    assert out["name"] == name
    assert {"reference_s", "fast_s", "speedup", "agree"} <= set(out)
    assert out["agree"] is True and out["max_ap_diff"] <= 1e-9
    assert out["fast_s"] > 0 and out["speedup"] == pytest.approx(out["reference_s"] / out["fast_s"])
    assert 0.0 < out["mAP"] < 1.0
