"""Annotation cache: first load (parse every PRW annotation .mat, write the
cache) against a cached load, on a generated PRW-format annotation set.

quick: 1,000 frames; full: 11,816 frames (the size of PRW).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oimnet.data import load_records  # noqa: E402
from oimnet.data.synth import generate  # noqa: E402

SPLITS = ("train", "gallery", "query")


def _load_all(root: str) -> tuple[float, dict]:
    start = time.perf_counter()
    out = {s: load_records("PRW", root, s) for s in SPLITS}
    return time.perf_counter() - start, out


def _same(a: dict, b: dict) -> bool:
    for s in SPLITS:
        if len(a[s]) != len(b[s]):
            return False
        for ra, rb in zip(a[s], b[s]):
            if (
                (ra["img_name"], ra["img_path"], ra["cam_id"]) != (rb["img_name"], rb["img_path"], rb["cam_id"])
                or not np.array_equal(ra["boxes"], rb["boxes"])
                or not np.array_equal(ra["pids"], rb["pids"])
            ):
                return False
    return True


def bench_annotation_cache(quick: bool) -> dict:
    frames = 1000 if quick else 11816
    tmp = tempfile.mkdtemp(prefix="oimnet-bench-data-")
    try:
        root = os.path.join(tmp, "prw")
        t0 = time.perf_counter()
        generate(
            root,
            "prw",
            seed=0,
            identities=800 if not quick else 200,
            frames=frames,
            size="320x240",
            annotations_only=True,
        )
        gen_s = time.perf_counter() - t0
        first_s, first = _load_all(root)
        cached_s, cached = _load_all(root)
        return {
            "name": "annotation_cache",
            "reference_s": first_s,
            "fast_s": cached_s,
            "speedup": first_s / cached_s,
            "agree": _same(first, cached),
            "frames": frames,
            "generation_s": gen_s,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


BENCHMARKS = {"annotation_cache": bench_annotation_cache}

if __name__ == "__main__":
    print(bench_annotation_cache("--quick" in sys.argv))
