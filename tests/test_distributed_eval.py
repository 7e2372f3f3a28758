"""Evaluation sharded over 2 gloo CPU processes equals one process: eval cache bit for bit, same metrics."""

import json

import pytest
import torch

from oimnet.distributed.eval_shards import shard_indices
from tests import distributed_workers as dw


def test_shards_are_whole_batches_dealt_round_robin():
    assert shard_indices(10, 3, 0, 2) == [0, 1, 2, 6, 7, 8]
    assert shard_indices(10, 3, 1, 2) == [3, 4, 5, 9]
    for n, batch, world in ((10, 3, 2), (7, 1, 3), (2, 4, 3), (0, 2, 2)):
        shards = [shard_indices(n, batch, r, world) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
    assert shard_indices(2, 4, 1, 3) == []  # more ranks than batches: an empty shard
    with pytest.raises(ValueError, match="BATCH_SIZE_TEST 0"):
        shard_indices(4, 0, 0, 2)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        shard_indices(4, 1, 2, 2)


@pytest.mark.slow
def test_sharded_evaluation_on_two_ranks_equals_one_process(tmp_path):
    from oimnet.data import build_test_loader
    from oimnet.engine.evaluation import evaluate

    data, out = tmp_path / "data", tmp_path / "sharded"
    cfg = dw.eval_config(str(tmp_path / "one"), str(data))
    n_gallery = len(build_test_loader(cfg, "gallery").dataset.records)  # generates the world before the ranks read it
    n_query = len(build_test_loader(cfg, "query").dataset.records)
    assert n_gallery > 2 * int(cfg.INPUT.BATCH_SIZE_TEST) and n_gallery % int(cfg.INPUT.BATCH_SIZE_TEST)

    ranks = dw.run_on_ranks("sharded_eval_worker", 2, tmp_path / "ranks", str(out), str(data))
    # One thread, as each rank runs: the CPU kernels' reduction order (and so the last bit) follows the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictor = dw.eval_predictor(cfg)
        ref = evaluate(predictor, cfg, tmp_path / "one", tag="sharded")
        ref_gt = evaluate(predictor, cfg, tmp_path / "one", tag="sharded_gt", use_gt=True)
        ref_cache = dw.cache_tensors(predictor.eval_cache(cfg))
    finally:
        torch.set_num_threads(threads)

    # Each rank ran its own round-robin batches, together every image once (gallery and query).
    ran = [r["ran"].tolist() for r in ranks]  # gallery, query, GT gallery, query
    assert sorted(ran[0] + ran[1]) == sorted(2 * (list(range(n_gallery)) + [100000 + i for i in range(n_query)]))
    assert not set(ran[0]) & set(ran[1])
    assert all(len(s) > 0 for s in ran)
    # Rank 0 scored and wrote the files; rank 1 got None and wrote nothing of its own.
    assert not bool(ranks[0]["is_none"]) and bool(ranks[1]["is_none"]) and bool(ranks[1]["second_call_none"])
    written = ["eval_cache.pth", "eval_cache_gt.pth", "results.json", "results_sharded.json", "results_sharded_gt.json"]
    assert sorted(p.name for p in out.iterdir()) == written
    # The cache bit for bit, the metrics exactly.
    got = {k[len("cache/") :]: v for k, v in ranks[0].items() if k.startswith("cache/")}
    assert set(got) == set(ref_cache) and sum(v.shape[0] for k, v in got.items() if k.startswith("gallery_dets")) > 0
    for key, want in ref_cache.items():
        assert torch.equal(got[key], want), key
    for prefix, want in (("metric/", ref), ("metric_gt/", ref_gt)):
        metrics = {k[len(prefix) :]: float(v) for k, v in ranks[0].items() if k.startswith(prefix)}
        assert {"mAP", "top1", "det_ap"} <= set(metrics) and metrics == {k: float(want[k]) for k in metrics}
    assert ref_gt["mAP"] > 0
    assert json.loads((out / "results.json").read_text())["mAP"] == ref["mAP"]
