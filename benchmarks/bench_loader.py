"""Input pipeline at PRW size: the training loader and the model's preprocessing.

``loader_prw``: decode + random flip + collate of 1080x1920 JPEG frames (the
size of PRW's frames) through the training loader in the main process
(``NUM_WORKERS_TRAIN`` 0), batches of 5; ``images_per_s``.
``preprocess``: the model's normalize + resize + pad (and box scaling) of
one such batch on the CPU (``fast_s`` per batch of 5, median), in training
mode; 1080x1920 frames become 843x1500, padded to 864x1504.

There is no slower reference, so ``reference_s``/``speedup`` are None and
``fast_s`` is seconds per batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image

PRW_SIZE = (1080, 1920)  # rows, columns of a PRW frame
BATCH = 5


def _write_frames(folder: str, n: int) -> list[dict]:
    """n smooth-noise JPEG frames of PRW size with three boxes each -> records."""
    rng = np.random.default_rng(0)
    h, w = PRW_SIZE
    records = []
    for i in range(n):
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        path = os.path.join(folder, f"c1s1_{i:06d}.jpg")
        img.save(path, quality=90)
        boxes = np.array(
            [[100.0, 200.0, 180.0, 420.0], [900.0, 300.0, 990.0, 560.0], [1500.0, 500.0, 1600.0, 800.0]], np.float32
        )
        records.append(
            {
                "img_name": os.path.basename(path),
                "img_path": path,
                "boxes": boxes,
                "pids": np.array([1, 2, 5555], np.int64),
                "cam_id": 1,
            }
        )
    return records


def _cfg():
    from oimnet.config import load_config

    return load_config(
        None,
        {
            "INPUT.BATCH_SIZE_TRAIN": BATCH,
            "INPUT.NUM_WORKERS_TRAIN": 0,
            "MODEL.BACKBONE.NAME": "tiny",
            "MODEL.BACKBONE.WEIGHTS": "",
        },
    )


def bench_loader_prw(quick: bool) -> dict:
    from oimnet.data import build_train_loader

    frames = 10 if quick else 20
    tmp = tempfile.mkdtemp(prefix="oimnet-bench-loader-")
    try:
        records = _write_frames(tmp, frames)
        loader = build_train_loader(_cfg(), seed=0, records=records)
        next(iter(loader))  # warm-up (file cache, allocator)
        times = []
        for _ in range(1 if quick else 3):
            start = time.perf_counter()
            n = sum(len(images) for images, _ in loader)
            times.append((time.perf_counter() - start) / n)
        per_image = statistics.median(times)
        return {
            "name": "loader_prw",
            "reference_s": None,
            "fast_s": per_image * BATCH,
            "speedup": None,
            "images_per_s": 1.0 / per_image,
            "frames": frames,
            "batch": BATCH,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_preprocess(quick: bool) -> dict:
    from oimnet.data import build_train_loader
    from oimnet.models import build_model

    logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="oimnet-bench-preprocess-")
    try:
        cfg = _cfg()  # INPUT.MIN_SIZE / MAX_SIZE: the defaults 900 / 1500
        images, targets = next(iter(build_train_loader(cfg, seed=0, records=_write_frames(tmp, BATCH))))
        model = build_model(cfg).train()
        times = []
        with torch.no_grad():
            for _ in range(2 if quick else 5):
                start = time.perf_counter()
                batch, _, _ = model.preprocess(images, [t["boxes"] for t in targets])
                times.append(time.perf_counter() - start)
        return {
            "name": "preprocess",
            "reference_s": None,
            "fast_s": statistics.median(times),
            "speedup": None,
            "batch_shape": list(batch.tensors.shape),
            "batch": BATCH,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


BENCHMARKS = {"loader_prw": bench_loader_prw, "preprocess": bench_preprocess}
