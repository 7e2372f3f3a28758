"""The release's eval cache: read, write, check.

A cache is a dict of lists, one entry per image in dataset order::

    gallery_dets     N_gallery x (n_i, 5)   x1, y1, x2, y2, score (original pixels)
    gallery_feats    N_gallery x (n_i, F)   one embedding per detection
    query_box_feats  N_query x (F,)         embedding of the query box
    query_dets       N_query x (m_j, 5)     query image run as a gallery image,
    query_feats      N_query x (m_j, F)     query box first (CBGM context)

Entries may be NumPy arrays or torch tensors (an empty list also means no
detection). ``query_dets``/``query_feats`` may be missing or empty lists when
CBGM is not used. Caches written by this project also hold ``dataset``:
the identity of the dataset they were computed on (see dataset_identity),
checked before scoring so that a cache of another dataset with the same
split sizes is refused by name. Files are ``torch.save`` pickles of such a
dict; they are loaded with ``weights_only=True`` and only NumPy's array
types allowed (plus ``bytes``, which an empty array's pickle calls).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CACHE_KEYS",
    "CacheError",
    "save_cache",
    "load_cache",
    "normalize_cache",
    "dataset_identity",
    "check_identity",
]

CACHE_KEYS = ("gallery_dets", "gallery_feats", "query_dets", "query_feats", "query_box_feats")
REQUIRED_KEYS = ("gallery_dets", "gallery_feats", "query_box_feats")


class CacheError(ValueError):
    """A malformed eval cache; the message names the file/key/entry."""


def _numpy_safe_globals() -> list:
    """Everything a pickled NumPy array or scalar needs, under both the
    NumPy 2 (``numpy._core``) and the NumPy 1 (``numpy.core``) module names."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25 pickles dtypes by class
    dtype_classes = [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
    return [
        np.ndarray,
        np.dtype,
        core._reconstruct,
        core.scalar,
        bytes,  # protocol 2 pickles an empty array's data as bytes(); calling it runs no code
        (core._reconstruct, "numpy.core.multiarray._reconstruct"),
        (core.scalar, "numpy.core.multiarray.scalar"),
        *dtype_classes,
    ]


def dataset_identity(dataset: str, gallery: list[dict], query: list[dict]) -> dict:
    """{"name", "n_gallery", "n_query", "annotation_digest"} of a test split:
    the digest (SHA-1, 16 hex digits) covers every gallery and query image
    name, box (float64) and pid (int64) in order, so two datasets with the
    same sizes but other images or annotations differ."""
    h = hashlib.sha1()
    for split, records in (("gallery", gallery), ("query", query)):
        h.update(f"{split} {len(records)}\n".encode())
        for r in records:
            h.update(str(r["img_name"]).encode() + b"\0")
            h.update(np.ascontiguousarray(r["boxes"], dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(r["pids"], dtype=np.int64).tobytes())
    return {
        "name": str(dataset),
        "n_gallery": len(gallery),
        "n_query": len(query),
        "annotation_digest": h.hexdigest()[:16],
    }


def check_identity(cache: dict, expected: dict, where: str = "eval cache") -> None:
    """Raise CacheError when the cache records another dataset than expected
    (caches without a record, such as the release's, are not checked here)."""
    stored = cache.get("dataset") if isinstance(cache, dict) else None
    if not isinstance(stored, dict):
        return
    diff = [f"{k} {stored.get(k)!r} != {expected[k]!r}" for k in expected if stored.get(k) != expected[k]]
    if diff:
        raise CacheError(
            f"{where}: computed on another dataset than INPUT.DATASET/INPUT.DATA_ROOT give "
            f"({'; '.join(diff)}; cache vs. data)"
        )


def save_cache(path, cache: dict, identity: dict | None = None) -> None:
    """Write cache (dict of lists, see module doc) with ``torch.save``.

    Tensors are stored as NumPy arrays, as the release does; ``identity``
    (dataset_identity of the split it was computed on) is stored as
    ``dataset``. The file is written to a temporary name first so a crash
    never leaves half a cache.
    """
    missing = [k for k in REQUIRED_KEYS if k not in cache]
    if missing:
        raise CacheError(f"save_cache({path}): missing key(s) {', '.join(missing)}")
    out = {k: [_to_numpy(x) for x in cache[k]] for k in CACHE_KEYS if k in cache}
    identity = identity or cache.get("dataset")
    if identity is not None:
        out["dataset"] = dict(identity)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)


def load_cache(path) -> dict:
    """Read an eval cache file safely (``weights_only=True``).

    Returns the dict as stored (lists of arrays). Raises CacheError naming the
    path when the file is missing, not a cache, or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"eval cache {path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise CacheError(f"eval cache {path}: cannot be read as a torch.save file of arrays ({exc})") from exc
    if not isinstance(obj, dict):
        raise CacheError(
            f"eval cache {path}: expected a dict with keys {', '.join(CACHE_KEYS)}, got {type(obj).__name__}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CacheError(f"eval cache {path}: missing key(s) {', '.join(missing)} (has {', '.join(map(str, obj))})")
    return obj


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _entry(x, key: str, i: int, width: int | None, where: str) -> np.ndarray:
    """One list entry as a 2-D float array (n, width); [] / None -> (0, width)."""
    x = _to_numpy(x)
    if x is None or (isinstance(x, (list, tuple)) and len(x) == 0):
        return np.zeros((0, width or 0), dtype=np.float32)
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros((0, width or (arr.shape[-1] if arr.ndim >= 2 else 0)), dtype=np.float32)
    if not np.issubdtype(arr.dtype, np.number):
        raise CacheError(f"{where}: {key}[{i}] has dtype {arr.dtype}, expected numbers")
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr.reshape(1, -1)
    if width is not None and arr.shape[1] != width:
        raise CacheError(f"{where}: {key}[{i}] has shape {arr.shape}, expected (n, {width})")
    return arr


def normalize_cache(cache: dict, n_gallery: int, n_query: int, where: str = "eval cache") -> dict:
    """Check a cache against the dataset and convert it to plain arrays.

    Returns a new dict: ``gallery_dets`` list of (n,5) float64,
    ``gallery_feats`` list of (n,F), ``query_box_feats`` (Q,F) float64,
    ``query_dets``/``query_feats`` lists (or None when absent or empty).
    Raises CacheError naming the key, entry and expected shape.
    """
    if not isinstance(cache, dict):
        raise CacheError(f"{where}: expected a dict, got {type(cache).__name__}")
    for key in REQUIRED_KEYS:
        if key not in cache:
            raise CacheError(f"{where}: missing key {key!r}")
    expect = {
        "gallery_dets": n_gallery,
        "gallery_feats": n_gallery,
        "query_box_feats": n_query,
        "query_dets": n_query,
        "query_feats": n_query,
    }
    present = {}
    for key, n in expect.items():
        val = cache.get(key)
        if val is None or (key.startswith("query_") and key != "query_box_feats" and len(val) == 0):
            continue
        if len(val) != n:
            what = "gallery" if key.startswith("gallery") else "query"
            raise CacheError(f"{where}: {key} has {len(val)} entries but the {what} split has {n} images")
        present[key] = val

    dets = [_entry(x, "gallery_dets", i, 5, where).astype(np.float64) for i, x in enumerate(present["gallery_dets"])]
    qbox = [_entry(x, "query_box_feats", i, None, where).reshape(-1) for i, x in enumerate(present["query_box_feats"])]
    dim = qbox[0].size if qbox else None
    for i, f in enumerate(qbox):
        if f.size != dim:
            raise CacheError(f"{where}: query_box_feats[{i}] has {f.size} values, expected {dim}")
    feats = [_entry(x, "gallery_feats", i, dim, where) for i, x in enumerate(present["gallery_feats"])]
    for i, (d, f) in enumerate(zip(dets, feats)):
        if len(d) != len(f):
            raise CacheError(
                f"{where}: gallery_dets[{i}] has {len(d)} boxes but gallery_feats[{i}] has {len(f)} features"
            )
    out = {
        "gallery_dets": dets,
        "gallery_feats": feats,
        "query_box_feats": np.asarray(qbox, dtype=np.float64).reshape(len(qbox), dim or 0),
        "query_dets": None,
        "query_feats": None,
    }
    if "query_dets" in present and "query_feats" in present:
        qd = [_entry(x, "query_dets", i, 5, where).astype(np.float64) for i, x in enumerate(present["query_dets"])]
        qf = [_entry(x, "query_feats", i, dim, where) for i, x in enumerate(present["query_feats"])]
        for i, (d, f) in enumerate(zip(qd, qf)):
            if len(d) != len(f):
                raise CacheError(
                    f"{where}: query_dets[{i}] has {len(d)} boxes but query_feats[{i}] has {len(f)} features"
                )
        out["query_dets"], out["query_feats"] = qd, qf
    return out
