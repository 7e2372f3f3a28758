"""Transforms and DataLoaders on a tiny PRW-format root with real JPEGs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

from oimnet.data import build_test_loader, build_train_loader, load_records
from oimnet.data.transforms import resize_scale

W, H = 64, 48


def _cells(names):
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    return arr


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """8 train frames (one without boxes) and 3 test frames; each frame is grey
    with a pure red block exactly where its first box is."""
    root = str(tmp_path_factory.mktemp("loader") / "prw")
    os.makedirs(os.path.join(root, "annotations"))
    os.makedirs(os.path.join(root, "frames"))
    names = {
        "train": [f"c{1 + i % 6}s1_{i:06d}" for i in range(8)],
        "test": [f"c{1 + i % 6}s2_{i:06d}" for i in range(3)],
    }
    for split, ns in names.items():
        for i, n in enumerate(ns):
            x = 4 + 4 * i
            rows = [] if (split == "train" and i == 5) else [[i + 1, x, 8, 12, 24], [-2, 40, 10, 8, 16]]
            scipy.io.savemat(
                os.path.join(root, "annotations", n + ".jpg.mat"), {"box_new": np.array(rows, float).reshape(-1, 5)}
            )
            arr = np.full((H, W, 3), 128, np.uint8)
            if rows:
                arr[8:32, x : x + 12] = (255, 0, 0)
            Image.fromarray(arr).save(os.path.join(root, "frames", n + ".jpg"), quality=100)
    scipy.io.savemat(os.path.join(root, "frame_train.mat"), {"img_index_train": _cells(names["train"])})
    scipy.io.savemat(os.path.join(root, "frame_test.mat"), {"img_index_test": _cells(names["test"])})
    with open(os.path.join(root, "query_info.txt"), "wb") as f:
        f.write(f"1 4 8 12 24 {names['test'][0]}\r\n".encode())
    return root


def cfg_for(root, **kw):
    inp = {
        "DATASET": "PRW",
        "DATA_ROOT": root,
        "MIN_SIZE": 96,
        "MAX_SIZE": 120,
        "BATCH_SIZE_TRAIN": 3,
        "BATCH_SIZE_TEST": 2,
        "NUM_WORKERS_TRAIN": 0,
        "NUM_WORKERS_TEST": 0,
    }
    inp.update(kw)
    return OmegaConf.create({"INPUT": inp, "SEED": 3})


def test_resize_scale_rule():
    assert resize_scale(64, 48, 96, 1000) == 2.0  # shorter side -> MIN_SIZE
    assert resize_scale(64, 48, 96, 120) == 120 / 64  # longer side capped at MAX_SIZE
    assert resize_scale(1920, 1080, 900, 1500) == 1500 / 1920


def test_test_loader_resize_and_order(root):
    loader = build_test_loader(cfg_for(root), "gallery")
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 1]
    images = [im for b in batches for im in b[0]]
    targets = [t for b in batches for t in b[1]]
    recs = load_records("PRW", root, "gallery")
    assert [t["img_name"] for t in targets] == [r["img_name"] for r in recs]
    assert [t["index"] for t in targets] == [0, 1, 2]
    scale = 120 / 64
    for im, t, r in zip(images, targets, recs):
        assert im.shape == (3, 90, 120) and im.dtype == torch.float32
        assert 0.0 <= float(im.min()) and float(im.max()) <= 1.0
        assert t["scale"] == pytest.approx(scale)
        torch.testing.assert_close(t["boxes"], torch.from_numpy(r["boxes"]) * scale)
        assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == r["pids"].tolist()
        # the red block lies inside the first box (not flipped)
        x1, y1, x2, y2 = t["boxes"][0].round().int().tolist()
        assert float(im[0, y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean()) > 0.9
        assert float(im[1, y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean()) < 0.1
    q = list(build_test_loader(cfg_for(root), "query"))
    assert len(q) == 1 and q[0][1][0]["boxes"].shape == (1, 4)


def _epoch(loader):
    out = []
    for images, targets in loader:
        for im, t in zip(images, targets):
            out.append((t["img_name"], t["index"], tuple(t["boxes"][0].tolist())))
            # wherever the first box went (flipped or not), the red block is inside it
            x1, y1, x2, y2 = t["boxes"][0].round().int().tolist()
            assert float(im[0, y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean()) > 0.9
            assert im.shape[1:] == (90, 120)
    return out


def test_train_loader_skips_empty_flips_and_is_reproducible(root):
    loader = build_train_loader(cfg_for(root))
    e0, e1 = _epoch(loader), _epoch(loader)
    assert len(loader) == 2 and len(e0) == 6  # 7 frames with boxes, batches of 3, last dropped
    recs = load_records("PRW", root, "train")
    assert all(len(recs[i]["boxes"]) for _, i, _ in e0 + e1)
    assert e0 != e1  # a new order/flips per epoch
    flipped = {name for name, i, b in e0 + e1 if not np.allclose(b, recs[i]["boxes"][0] * (120 / 64))}
    assert flipped  # some images are mirrored ...
    for _name, i, b in e0 + e1:
        unflipped = recs[i]["boxes"][0] * (120 / 64)
        mirrored = np.array([120 - unflipped[2], unflipped[1], 120 - unflipped[0], unflipped[3]])
        assert np.allclose(b, unflipped, atol=1e-4) or np.allclose(b, mirrored, atol=1e-4)
    # rebuilt with the same seed: same epochs; set_epoch replays epoch 1 alone
    again = build_train_loader(cfg_for(root))
    assert _epoch(again) == e0 and _epoch(again) == e1
    resumed = build_train_loader(cfg_for(root))
    resumed.batch_sampler.set_epoch(1)
    assert _epoch(resumed) == e1
    assert _epoch(build_train_loader(cfg_for(root), seed=4)) != e0


def test_train_loader_same_with_workers(root):
    base = _epoch(build_train_loader(cfg_for(root)))
    assert _epoch(build_train_loader(cfg_for(root, NUM_WORKERS_TRAIN=1))) == base


def test_missing_image_named(root, tmp_path):
    recs = load_records("PRW", root, "gallery")
    recs[0] = {**recs[0], "img_path": str(tmp_path / "gone.jpg")}
    with pytest.raises(ValueError, match="gone.jpg: cannot read image"):
        next(iter(build_test_loader(cfg_for(root), "gallery", records=recs)))
