"""Eval cache files: round trip, safe loading, clear errors."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from oimnet.eval import CacheError, evaluate_cache, load_cache, normalize_cache, save_cache
from oimnet.eval.fake import random_cache, random_world


class NotAnArray:  # pickled by reference: weights_only loading must refuse it
    pass


@pytest.fixture(scope="module")
def case():
    gallery, query = random_world(40, 6, 10, seed=3)
    return gallery, query, random_cache(gallery, query, seed=4)


def test_round_trip_numpy_and_tensors_same_metrics(case, tmp_path):
    gallery, query, cache = case
    cfg = OmegaConf.create({"INPUT": {"DATASET": "PRW"}, "EVAL_USE_CBGM": True})
    want = evaluate_cache(cfg, cache, gallery, query, per_query=False)
    mixed = {k: [torch.from_numpy(v) if i % 2 else v for i, v in enumerate(vals)] for k, vals in cache.items()}
    save_cache(tmp_path / "c.pth", mixed)
    loaded = load_cache(tmp_path / "c.pth")
    assert set(loaded) == set(cache)
    assert all(isinstance(x, np.ndarray) for x in loaded["gallery_dets"])  # stored as the release does
    np.testing.assert_array_equal(loaded["gallery_feats"][3], cache["gallery_feats"][3])
    assert evaluate_cache(cfg, loaded, gallery, query, per_query=False) == want
    # tensors straight from a model work without a file too
    assert evaluate_cache(cfg, mixed, gallery, query, per_query=False) == want


def test_empty_detection_entries_accepted(case):
    gallery, query, cache = case
    c = dict(cache)
    c["gallery_dets"] = [[] if i == 0 else d for i, d in enumerate(cache["gallery_dets"])]
    c["gallery_feats"] = [[] if i == 0 else f for i, f in enumerate(cache["gallery_feats"])]
    out = normalize_cache(c, len(gallery), len(query))
    assert out["gallery_dets"][0].shape == (0, 5) and out["gallery_feats"][0].shape == (0, 256)


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"gallery_dets": [NotAnArray()], "gallery_feats": [], "query_box_feats": []}, tmp_path / "evil.pth")
    with pytest.raises(CacheError, match=r"evil\.pth: cannot be read"):
        load_cache(tmp_path / "evil.pth")


def test_missing_file_key_and_wrong_type(tmp_path):
    with pytest.raises(CacheError, match=r"nope\.pth: no such file"):
        load_cache(tmp_path / "nope.pth")
    torch.save({"gallery_dets": [], "gallery_feats": []}, tmp_path / "partial.pth")
    with pytest.raises(CacheError, match=r"partial\.pth: missing key\(s\) query_box_feats"):
        load_cache(tmp_path / "partial.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CacheError, match=r"list\.pth: expected a dict"):
        load_cache(tmp_path / "list.pth")


def test_malformed_entries_name_key_and_expectation(case):
    gallery, query, cache = case
    with pytest.raises(CacheError, match=r"gallery_dets has 39 entries but the gallery split has 40 images"):
        normalize_cache({**cache, "gallery_dets": cache["gallery_dets"][1:]}, len(gallery), len(query))
    bad = list(cache["gallery_dets"])
    bad[2] = bad[2][:, :4]
    with pytest.raises(CacheError, match=r"gallery_dets\[2\] has shape .*expected \(n, 5\)"):
        normalize_cache({**cache, "gallery_dets": bad}, len(gallery), len(query))
    feats = list(cache["gallery_feats"])
    feats[5] = np.zeros((len(feats[5]) + 1, 256), np.float32)
    with pytest.raises(CacheError, match=r"gallery_dets\[5\] has \d+ boxes but gallery_feats\[5\] has \d+ features"):
        normalize_cache({**cache, "gallery_feats": feats}, len(gallery), len(query))
    with pytest.raises(CacheError, match=r"my.pth: missing key 'query_box_feats'"):
        normalize_cache({"gallery_dets": [], "gallery_feats": []}, 0, 0, where="my.pth")
