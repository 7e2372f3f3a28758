"""A synthetic person-search world written in the PRW or CUHK-SYSU format.

``generate(out, fmt="prw", seed=0, identities=50, frames=400, size="320x240")``
plans a world (layout.py), renders it (render.py) and writes it
(writers.py), then records its settings and the counts a loader must find in
``synth_meta.json``. Deterministic for a seed.

The default world: 50 identities (30 train, 20 test, disjoint), 400 frames
of 320x240 from 6 cameras (240 train / 160 test), 2-6 people per frame
(about a quarter unlabeled passers-by) 40-130 px tall, partial occlusion,
long-tailed identity frequency. It generates in a few seconds.

``ensure_synthetic(root, **settings)`` generates a PRW-format world at
``root`` unless one is there already (dataset "synthetic" does this on first
use). Concurrent callers are serialised by a lock file beside the root, and
the world is written to a temporary directory first and moved in, so no
process ever reads half a dataset.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import warnings

from .layout import plan_world
from .writers import expected_counts, write_cuhk, write_prw

DEFAULTS = {"seed": 0, "identities": 50, "frames": 400, "size": "320x240"}
META_FILE = "synth_meta.json"
GENERATOR_VERSION = 1
_PRW_FILES = ("frame_train.mat", "frame_test.mat", "query_info.txt")


def parse_size(size) -> tuple[int, int]:
    """ "320x240" or (320, 240) -> (width, height)."""
    if isinstance(size, str):
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError as exc:
            raise ValueError(f"size {size!r}: expected WIDTHxHEIGHT, e.g. 320x240") from exc
    else:
        w, h = (int(v) for v in size)
    if w < 32 or h < 32:
        raise ValueError(f"size {w}x{h}: both sides must be at least 32 pixels")
    return w, h


def generate(
    out: str,
    fmt: str = "prw",
    seed: int = DEFAULTS["seed"],
    identities: int = DEFAULTS["identities"],
    frames: int = DEFAULTS["frames"],
    size=DEFAULTS["size"],
    annotations_only: bool = False,
) -> dict:
    """Write a world to ``out`` in format "prw" or "cuhk"; returns the meta
    dict also written to ``out/synth_meta.json`` (settings, counts, time).

    annotations_only: skip the images (fast; for annotation-parsing tests).
    """
    if fmt not in ("prw", "cuhk"):
        raise ValueError(f"format {fmt!r}: expected 'prw' or 'cuhk'")
    start = time.perf_counter()
    width, height = parse_size(size)
    plan = plan_world(int(seed), int(identities), int(frames), width, height)
    os.makedirs(out, exist_ok=True)
    (write_prw if fmt == "prw" else write_cuhk)(plan, out, render=not annotations_only)
    meta = {
        "generator": "oimnet.data.synth",
        "version": GENERATOR_VERSION,
        "format": fmt,
        "settings": {
            "seed": int(seed),
            "identities": int(identities),
            "frames": int(frames),
            "size": f"{width}x{height}",
            "annotations_only": bool(annotations_only),
        },
        "train_ids": len(plan["train_ids"]),
        "test_ids": len(plan["test_ids"]),
        "num_train_ids": max(plan["train_ids"]),
        "counts": expected_counts(plan, fmt),
        "generation_s": round(time.perf_counter() - start, 3),
    }
    tmp = os.path.join(out, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(out, META_FILE))
    return meta


def read_meta(root: str) -> dict | None:
    """The generator's meta of a root, or None when it is not a generated set."""
    try:
        with open(os.path.join(root, META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_generated(root: str) -> bool:
    """True when ``root`` holds a complete PRW-format set."""
    return os.path.isfile(os.path.join(root, META_FILE)) or all(
        os.path.isfile(os.path.join(root, f)) for f in _PRW_FILES
    )


def ensure_synthetic(root: str, **settings) -> str:
    """Generate a PRW-format world at ``root`` (DEFAULTS updated by
    ``settings``: seed, identities, frames, size) unless one exists; returns
    the absolute root. An existing set is kept even if its settings differ
    (a warning says so; delete the folder to regenerate)."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic settings {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    if not is_generated(root):
        parent, base = os.path.split(root)
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f".{base}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not is_generated(root):
                    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
                    try:
                        generate(tmp, "prw", **{**DEFAULTS, **settings})
                        _move_into(tmp, root)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    meta = read_meta(root)
    if meta is not None and meta.get("format", "prw") != "prw":
        raise ValueError(
            f"{root}: holds a synthetic set in {meta['format']!r} format; dataset "
            "'synthetic' needs the PRW format (load this one as 'CUHK-SYSU')"
        )
    _warn_if_different(root, settings)
    return root


def _move_into(tmp: str, root: str) -> None:
    """Move a finished world into ``root``: one rename when root is absent or
    empty, else entry by entry with the split files and the meta last."""
    if os.path.isdir(root) and not os.listdir(root):
        os.rmdir(root)
    if not os.path.exists(root):
        os.rename(tmp, root)
        return
    last = list(_PRW_FILES) + [META_FILE]
    entries = [e for e in sorted(os.listdir(tmp)) if e not in last] + [
        e for e in last if os.path.exists(os.path.join(tmp, e))
    ]
    for entry in entries:
        dst = os.path.join(root, entry)
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        os.replace(os.path.join(tmp, entry), dst)


def _warn_if_different(root: str, settings: dict) -> None:
    meta = read_meta(root)
    if meta is None or not settings:
        return
    have = meta.get("settings", {})
    wanted = {**DEFAULTS, **settings}
    wanted["size"] = "x".join(map(str, parse_size(wanted["size"])))
    diff = {k: (have.get(k), v) for k, v in wanted.items() if k in settings and have.get(k) != v}
    if diff:
        warnings.warn(
            f"{root}: synthetic set exists with other settings "
            f"({', '.join(f'{k}: {a} there, {b} asked' for k, (a, b) in diff.items())}); "
            "using it as is (delete the folder to regenerate)",
            stacklevel=3,
        )
