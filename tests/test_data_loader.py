"""Transforms and DataLoaders on a tiny PRW-format root with real JPEGs.

The loaders give original-size images (the model resizes them), decoded as
the authors' release decodes them: PIL, RGB, torchvision's to_tensor.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from PIL import Image

from oimnet.data import build_test_loader, build_train_loader, load_records

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


def _release_tensor(path):
    """The release's image: PIL decode, RGB, torchvision to_tensor."""
    with Image.open(path) as f:
        return TF.to_tensor(f.convert("RGB"))


def test_test_loader_original_size_and_order(root):
    loader = build_test_loader(cfg_for(root), "gallery")
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [2, 1]
    images = [im for b in batches for im in b[0]]
    targets = [t for b in batches for t in b[1]]
    recs = load_records("PRW", root, "gallery")
    assert [t["img_name"] for t in targets] == [r["img_name"] for r in recs]
    assert [t["index"] for t in targets] == [0, 1, 2]
    for im, t, r in zip(images, targets, recs):
        assert im.shape == (3, H, W) and im.dtype == torch.float32 and im.is_contiguous()
        assert torch.equal(im, _release_tensor(r["img_path"]))  # bitwise
        assert "scale" not in t
        assert torch.equal(t["boxes"], torch.from_numpy(r["boxes"]))
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
            assert im.shape[1:] == (H, W)
    return out


def test_train_loader_skips_empty_flips_and_is_reproducible(root):
    loader = build_train_loader(cfg_for(root))
    e0, e1 = _epoch(loader), _epoch(loader)
    assert len(loader) == 2 and len(e0) == 6  # 7 frames with boxes, batches of 3, last dropped
    recs = load_records("PRW", root, "train")
    assert all(len(recs[i]["boxes"]) for _, i, _ in e0 + e1)
    assert e0 != e1  # a new order/flips per epoch
    flipped = {name for name, i, b in e0 + e1 if not np.array_equal(b, recs[i]["boxes"][0])}
    assert flipped  # some images are mirrored ...
    for _name, i, b in e0 + e1:
        unflipped = recs[i]["boxes"][0]
        mirrored = np.array([W - unflipped[2], unflipped[1], W - unflipped[0], unflipped[3]])
        assert np.array_equal(b, unflipped) or np.array_equal(b, mirrored)
    # rebuilt with the same seed: same epochs; set_epoch replays epoch 1 alone
    again = build_train_loader(cfg_for(root))
    assert _epoch(again) == e0 and _epoch(again) == e1
    resumed = build_train_loader(cfg_for(root))
    resumed.batch_sampler.set_epoch(1)
    assert _epoch(resumed) == e1
    assert _epoch(build_train_loader(cfg_for(root), seed=4)) != e0


def test_train_flip_is_the_releases_tensor_flip(root):
    # the release flips the decoded tensor (image.flip(-1)) and its boxes
    recs = load_records("PRW", root, "train")
    seen = set()
    for images, targets in build_train_loader(cfg_for(root)):
        for im, t in zip(images, targets):
            rec = recs[t["index"]]
            ref = _release_tensor(rec["img_path"])
            if torch.equal(t["boxes"], torch.from_numpy(rec["boxes"])):
                assert torch.equal(im, ref)
                seen.add(False)
            else:
                assert torch.equal(im, ref.flip(-1))
                boxes = torch.from_numpy(rec["boxes"]).clone()
                boxes[:, [0, 2]] = W - boxes[:, [2, 0]]
                assert torch.equal(t["boxes"], boxes)
                seen.add(True)
    assert seen == {False, True}


def test_train_loader_same_with_workers(root):
    base = _epoch(build_train_loader(cfg_for(root)))
    assert _epoch(build_train_loader(cfg_for(root, NUM_WORKERS_TRAIN=1))) == base


def test_missing_image_named(root, tmp_path):
    recs = load_records("PRW", root, "gallery")
    recs[0] = {**recs[0], "img_path": str(tmp_path / "gone.jpg")}
    with pytest.raises(ValueError, match="gone.jpg: cannot read image"):
        next(iter(build_test_loader(cfg_for(root), "gallery", records=recs)))
