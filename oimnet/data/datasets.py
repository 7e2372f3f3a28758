"""Public entry points: records per split, the CUHK-SYSU gallery protocol,
the training LUT size. Parsed annotations are cached (see cache.py).

Dataset ``"synthetic"`` is a generated set in PRW format at ``root``: when
the root holds no dataset yet it is generated there first with the default
generator settings (see ``oimnet.data.synth.ensure_synthetic``), so a fresh
clone runs without any download.
"""

from __future__ import annotations

import os

import numpy as np

from oimnet.constants import DATASETS, UNLABELED_PID

from . import cache, cuhk, prw
from .records import DatasetError, check_split


def _format_of(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return "cuhk" if dataset == "CUHK-SYSU" else "prw"


def _resolve_root(dataset: str, root: str, synth_kwargs: dict | None = None) -> str:
    root = os.path.abspath(os.path.expanduser(str(root)))
    if dataset == "synthetic":
        from .synth import ensure_synthetic  # generator imports PIL drawing code

        ensure_synthetic(root, **(synth_kwargs or {}))
    elif not os.path.isdir(root):
        raise DatasetError(f"{root}: dataset root of {dataset} not found (INPUT.DATA_ROOT)")
    return root


# --------------------------------------------------------------- records
def _pack(records: list[dict], root: str) -> dict:
    """Records -> a few flat arrays (cached as plain data); image paths root-relative."""
    counts = np.array([len(r["pids"]) for r in records], dtype=np.int64)
    return {
        "names": [r["img_name"] for r in records],
        "relpaths": [os.path.relpath(r["img_path"], root) for r in records],
        "cams": np.array([r["cam_id"] for r in records], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(counts)]),
        "boxes": np.concatenate([r["boxes"] for r in records]) if records else np.zeros((0, 4), np.float32),
        "pids": np.concatenate([r["pids"] for r in records]) if records else np.zeros(0, np.int64),
    }


def _unpack(packed: dict, root: str) -> list[dict]:
    off = packed["offsets"]
    boxes, pids = packed["boxes"], packed["pids"]
    return [
        {
            "img_name": name,
            "img_path": os.path.join(root, rel),
            "boxes": boxes[off[i] : off[i + 1]].copy(),
            "pids": pids[off[i] : off[i + 1]].copy(),
            "cam_id": int(packed["cams"][i]),
        }
        for i, (name, rel) in enumerate(zip(packed["names"], packed["relpaths"]))
    ]


def _parsed(fmt: str, root: str, use_cache: bool) -> dict:
    """{"splits": {split: packed records}, "stats": dict} of a root, cached."""
    module = cuhk if fmt == "cuhk" else prw
    files, dirs = module.input_files(root)

    def build():
        if fmt == "cuhk":
            splits, stats = cuhk.parse_cuhk(root)
        else:
            splits, stats = prw.parse_prw(root), {}
        return {"splits": {s: _pack(r, root) for s, r in splits.items()}, "stats": stats}

    return cache.load_or_build(
        root, f"{fmt}-annotations", cache.fingerprint(root, files, dirs), build, use_cache, validate=_valid_parsed
    )


def _valid_packed(p: dict) -> bool:
    """A cached split (see _pack) whose arrays agree with each other."""
    n = len(p["names"])
    off, boxes, pids = p["offsets"], p["boxes"], p["pids"]
    return (
        len(p["relpaths"]) == n
        and all(isinstance(x, str) for x in p["names"] + p["relpaths"])
        and not any(os.path.isabs(r) or ".." in r.split(os.sep) for r in p["relpaths"])
        and p["cams"].shape == (n,)
        and off.shape == (n + 1,)
        and off.dtype.kind == "i"
        and int(off[0]) == 0
        and bool(np.all(np.diff(off) >= 0))
        and boxes.ndim == 2
        and boxes.shape[1] == 4
        and boxes.dtype.kind == "f"
        and pids.shape == (int(off[-1]),)
        and boxes.shape[0] == int(off[-1])
        and pids.dtype.kind == "i"
    )


def _valid_parsed(value: dict) -> bool:
    return (
        set(value["splits"]) == {"train", "gallery", "query"}
        and isinstance(value["stats"], dict)
        and all(_valid_packed(p) for p in value["splits"].values())
    )


def _valid_protocol(entries: list) -> bool:
    return all(
        len(e) == 2
        and all(isinstance(n, str) for n in e[0])
        and e[1].ndim == 2
        and e[1].shape == (len(e[0]), 4)
        and e[1].dtype.kind == "f"
        for e in entries
    )


def load_records(
    dataset: str, root: str, split: str, use_cache: bool = True, synth_kwargs: dict | None = None
) -> list[dict]:
    """Records of one split, in dataset order (see records.py for the dict).

    dataset: "CUHK-SYSU", "PRW" or "synthetic"; split: "train", "gallery"
    or "query". Training pids are 1..L or 5555, gallery/query pids the test
    identities (PRW ids; CUHK-SYSU: 1-based query index in TestG50).
    ``synth_kwargs`` are generator settings used only if a synthetic root
    must be generated.
    """
    check_split(split)
    fmt = _format_of(dataset)
    root = _resolve_root(dataset, root, synth_kwargs)
    return _unpack(_parsed(fmt, root, use_cache)["splits"][split], root)


def parse_stats(dataset: str, root: str, use_cache: bool = True) -> dict:
    """Parser statistics (CUHK-SYSU: dropped zero-size boxes, unmatched identity boxes)."""
    fmt = _format_of(dataset)
    return dict(_parsed(fmt, _resolve_root(dataset, root), use_cache)["stats"])


def num_train_ids(dataset: str, root: str) -> int:
    """Largest labeled training pid L (the OIM LUT must hold >= L entries)."""
    pids = np.concatenate([r["pids"] for r in load_records(dataset, root, "train")] or [np.zeros(0, np.int64)])
    labeled = pids[(pids != UNLABELED_PID) & (pids > 0)]
    return int(labeled.max()) if labeled.size else 0


# ------------------------------------------------------------- protocol
def load_cuhk_protocol(root: str, gallery_size: int, use_cache: bool = True) -> list[list[dict]]:
    """Per CUHK-SYSU query (query-record order) its gallery entries
    ``{"img_name": str, "box": float array (4,) x1y1x2y2 or None}``.

    gallery_size: 50, 100, 500, 1000, 2000, 4000 (TestG{N}.mat), or -1 for
    the full set (every gallery image but the query's own, boxes taken from
    the gallery records).
    """
    if gallery_size != -1 and gallery_size not in cuhk.GALLERY_SIZES:
        raise ValueError(
            f"gallery_size {gallery_size}: expected one of {', '.join(map(str, cuhk.GALLERY_SIZES))} or -1 (full set)"
        )
    root = _resolve_root("CUHK-SYSU", root)
    queries = load_records("CUHK-SYSU", root, "query", use_cache)
    if gallery_size == -1:
        entries = cuhk.full_set_entries(load_records("CUHK-SYSU", root, "gallery", use_cache), queries)
    else:
        files, _ = cuhk.input_files(root)
        key = cache.fingerprint(root, files + [os.path.join(root, cuhk.protocol_mat(gallery_size))])
        entries = cache.load_or_build(
            root,
            f"cuhk-protocol-G{gallery_size}",
            key,
            lambda: cuhk.protocol_entries(root, gallery_size, queries),
            use_cache,
            validate=_valid_protocol,
        )
    return [
        [{"img_name": n, "box": None if np.isnan(b[0]) else b.copy()} for n, b in zip(names, boxes)]
        for names, boxes in entries
    ]
