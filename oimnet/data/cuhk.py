"""CUHK-SYSU (``CUHK-SYSU/``) read from an untouched download.

Layout and quirks of the download, and how the authors' loader reads it
(this module gives the same records; docs/fidelity.md):

* ``annotation/Images.mat`` (``Img``): every image with every person box
  (``idlocate``: a 1 x n struct array, one 1x4 ``x, y, w, h`` box each).
  Boxes with w <= 0 or h <= 0 (in the file's values) are dropped; each
  image must keep one.
* Every box (image, identity, query and protocol boxes) is truncated to
  int32 in (x, y, w, h) first; then x2 = x + w, y2 = y + h in integers.
  Identity boxes are matched to image boxes after that truncation.
* ``annotation/pool.mat`` (``pool``): the gallery images, in gallery order.
  Training images: all others, sorted by name.
* ``annotation/test/train_test/Train.mat`` (``Train``): identity k (1-based)
  labels the first box of each of its scenes whose (truncated) coordinates
  equal ``idlocate``'s.
* ``TestG{N}.mat`` (``TestG{N}``): per query a ``Query`` struct and a
  ``Gallery`` struct array; empty ``idlocate`` = person absent. Test pids are
  the 1-based query index in TestG50; gallery labelling stops at the first
  empty entry, as the authors' loader does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from oimnet.constants import UNLABELED_PID

from .matutil import field, get_var, load_mat, mat_box, mat_str, struct_items, unwrap
from .records import DatasetError, make_record

IMAGE_DIR = os.path.join("Image", "SSM")
IMAGES_MAT = "annotation/Images.mat"
POOL_MAT = "annotation/pool.mat"
TRAIN_MAT = "annotation/test/train_test/Train.mat"
GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


def protocol_mat(gallery_size: int) -> str:
    return f"annotation/test/train_test/TestG{gallery_size}.mat"


def int_xyxy(boxes_xywh) -> np.ndarray:
    """(n, 4) or (4,) x, y, w, h -> int32 x1, y1, x2, y2: truncate, then add."""
    boxes = np.asarray(boxes_xywh).astype(np.int32)
    boxes[..., 2:] += boxes[..., :2]
    return boxes


def _load(root: str, rel: str, var: str) -> np.ndarray:
    return get_var(load_mat(os.path.join(root, rel), rel), var, rel)


def read_images(root: str, on_error: Callable[[str], None] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Images.mat -> ({name: valid boxes xywh int32 (n, 4), truncated}, #dropped boxes).

    Zero-size boxes (w or h <= 0 before truncation) are dropped; an image
    left without boxes raises (or is reported to ``on_error`` and skipped).
    """
    img = _load(root, IMAGES_MAT, "Img")
    boxes_by_name: dict[str, np.ndarray] = {}
    dropped = 0
    for i, item in enumerate(struct_items(img, IMAGES_MAT)):
        label = f"{IMAGES_MAT}: Img({i + 1})"
        name = mat_str(field(item, "imname", label), label + ".imname")
        boxes = _image_boxes(field(item, "idlocate", label), f"{IMAGES_MAT}: {name}.idlocate")
        valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        dropped += int((~valid).sum())
        if not valid.any():
            msg = f"{IMAGES_MAT}: {name} has no box with positive width and height"
            if on_error is None:
                raise DatasetError(msg)
            on_error(msg)
            continue
        boxes_by_name[name] = boxes[valid].astype(np.int32)
    return boxes_by_name, dropped


def _image_boxes(idlocate, label: str) -> np.ndarray:
    """An Img(i).idlocate value -> (n, 4) float64 x, y, w, h."""
    value = unwrap(idlocate)
    arr = np.asarray(value)
    if arr.dtype.names is not None:  # 1 x n struct array with one field
        rows = [mat_box(item[0], f"{label}({j + 1})") for j, item in enumerate(struct_items(arr, label))]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if arr.dtype.kind in "iuf" and arr.size % 4 == 0:  # tolerate a plain n x 4 matrix
        return arr.astype(np.float64).reshape(-1, 4)
    raise DatasetError(
        f"{label}: expected a 1 x n struct array of 1x4 boxes, found shape {arr.shape} dtype {arr.dtype}"
    )


def read_pool(root: str) -> list[str]:
    """Gallery image names in pool.mat order."""
    pool = _load(root, POOL_MAT, "pool")
    return [mat_str(c, f"{POOL_MAT}: pool({i + 1})") for i, c in enumerate(np.asarray(pool).reshape(-1, order="F"))]


def _match(boxes: np.ndarray, pids: np.ndarray, box: np.ndarray, pid: int) -> bool:
    """Give ``pid`` to the first of ``boxes`` (int32 xywh) equal to ``box``
    (xywh, truncated to int32 first)."""
    hits = np.flatnonzero((boxes == np.asarray(box).astype(np.int32)).all(axis=1))
    if hits.size == 0:
        return False
    pids[hits[0]] = pid
    return True


def read_train_identities(root: str) -> list[list[tuple[str, np.ndarray]]]:
    """Train.mat -> per identity (1-based order) its (image name, box xywh) scenes."""
    train = _load(root, TRAIN_MAT, "Train")
    identities = []
    for k, item in enumerate(struct_items(train, TRAIN_MAT)):
        label = f"{TRAIN_MAT}: Train({k + 1})"
        scenes = []
        for j, scene in enumerate(struct_items(field(item, "scene", label), label + ".scene")):
            slabel = f"{label}.scene({j + 1})"
            scenes.append(
                (
                    mat_str(field(scene, "imname", slabel), slabel + ".imname"),
                    mat_box(field(scene, "idlocate", slabel), slabel + ".idlocate"),
                )
            )
        identities.append(scenes)
    return identities


def read_protocol(root: str, gallery_size: int) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray | None]]]]:
    """TestG{N}.mat -> per query (name, box xywh, [(gallery name, box xywh or None)])."""
    rel = protocol_mat(gallery_size)
    var = f"TestG{gallery_size}"
    out = []
    for q, item in enumerate(struct_items(_load(root, rel, var), rel)):
        label = f"{rel}: {var}({q + 1})"
        query = next(iter(struct_items(field(item, "Query", label), label + ".Query")), None)
        if query is None:
            raise DatasetError(f"{label}.Query: expected a struct, found an empty array")
        qname = mat_str(field(query, "imname", label), label + ".Query.imname")
        qbox = mat_box(field(query, "idlocate", label), label + ".Query.idlocate")
        gallery = []
        for g, entry in enumerate(struct_items(field(item, "Gallery", label), label + ".Gallery")):
            glabel = f"{label}.Gallery({g + 1})"
            gallery.append(
                (
                    mat_str(field(entry, "imname", glabel), glabel + ".imname"),
                    mat_box(field(entry, "idlocate", glabel), glabel + ".idlocate", allow_empty=True),
                )
            )
        out.append((qname, qbox, gallery))
    return out


def parse_cuhk(root: str, on_error: Callable[[str], None] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """All three splits of a CUHK-SYSU root, plus parse statistics.

    Returns ({"train", "gallery", "query"} -> records, stats) with stats
    ``dropped_boxes`` (zero-size) and ``unmatched_train`` / ``unmatched_test``
    (identity boxes equal to no image box).
    """
    boxes_by_name, dropped = read_images(root, on_error)
    pool = read_pool(root)
    pool_set = set(pool)
    missing = [n for n in pool if n not in boxes_by_name]
    if missing:
        raise DatasetError(f"{POOL_MAT}: {len(missing)} gallery images are not in {IMAGES_MAT} (first: {missing[:5]})")
    train_names = sorted(n for n in boxes_by_name if n not in pool_set)
    train_pids = {n: np.full(len(boxes_by_name[n]), UNLABELED_PID, np.int64) for n in train_names}
    test_pids = {n: np.full(len(boxes_by_name[n]), UNLABELED_PID, np.int64) for n in pool}

    unmatched_train = 0
    for k, scenes in enumerate(read_train_identities(root), 1):
        for name, box in scenes:
            if name not in train_pids or not _match(boxes_by_name[name], train_pids[name], box, k):
                unmatched_train += 1

    unmatched_test = 0
    queries = []
    for q, (qname, qbox, gallery) in enumerate(read_protocol(root, 50), 1):
        if qname not in test_pids:
            raise DatasetError(f"{protocol_mat(50)}: query {q} image {qname} is not in {POOL_MAT}")
        unmatched_test += not _match(boxes_by_name[qname], test_pids[qname], qbox, q)
        for gname, gbox in gallery:
            if gbox is None:
                break
            if gname not in test_pids or not _match(boxes_by_name[gname], test_pids[gname], gbox, q):
                unmatched_test += 1
        queries.append(make_record(qname, os.path.join(root, IMAGE_DIR, qname), int_xyxy(qbox), [q], -1))

    def records(names, pids):
        return [
            make_record(n, os.path.join(root, IMAGE_DIR, n), int_xyxy(boxes_by_name[n]), pids[n], -1) for n in names
        ]

    splits = {"train": records(train_names, train_pids), "gallery": records(pool, test_pids), "query": queries}
    stats = {"dropped_boxes": dropped, "unmatched_train": unmatched_train, "unmatched_test": unmatched_test}
    return splits, stats


def protocol_entries(root: str, gallery_size: int, queries: list[dict]) -> list[tuple[list[str], np.ndarray]]:
    """TestG{N} as compact per-query (gallery names, boxes xyxy (k, 4), NaN rows = absent).

    Boxes are the integer boxes of :func:`int_xyxy` (as float64, for the NaN rows).

    Checks that its queries are those of TestG50 (``queries``), in order.
    """
    proto = read_protocol(root, gallery_size)
    rel = protocol_mat(gallery_size)
    if len(proto) != len(queries):
        raise DatasetError(f"{rel}: {len(proto)} queries, but {protocol_mat(50)} has {len(queries)}")
    out = []
    for q, ((qname, _, gallery), qrec) in enumerate(zip(proto, queries), 1):
        if qname != qrec["img_name"]:
            raise DatasetError(
                f"{rel}: query {q} is {qname}, but in {protocol_mat(50)} it is "
                f"{qrec['img_name']} (expected the same query order)"
            )
        names = [g for g, _ in gallery]
        boxes = np.full((len(gallery), 4), np.nan)
        for i, (_, box) in enumerate(gallery):
            if box is not None:
                boxes[i] = int_xyxy(box)
        out.append((names, boxes))
    return out


def full_set_entries(gallery: list[dict], queries: list[dict]) -> list[tuple[list[str], np.ndarray]]:
    """The "full set" protocol: every gallery image but the query's own; the
    positive box is the gallery record's (first) box carrying the query's pid."""
    names = [rec["img_name"] for rec in gallery]
    index_of = {n: i for i, n in enumerate(names)}
    positives: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, rec in enumerate(gallery):
        seen = set()
        for box, pid in zip(rec["boxes"], rec["pids"].tolist()):
            if pid != UNLABELED_PID and pid not in seen:
                seen.add(pid)
                positives.setdefault(pid, []).append((i, box))
    out = []
    for qrec in queries:
        boxes = np.full((len(names), 4), np.nan)
        for i, box in positives.get(int(qrec["pids"][0]), []):
            boxes[i] = box
        own = index_of.get(qrec["img_name"])
        if own is None:
            out.append((list(names), boxes))
        else:
            out.append((names[:own] + names[own + 1 :], np.delete(boxes, own, axis=0)))
    return out


def input_files(root: str) -> tuple[list[str], list[str]]:
    """(files, directories) whose contents the parsed annotations depend on."""
    return [os.path.join(root, f) for f in (IMAGES_MAT, POOL_MAT, TRAIN_MAT, protocol_mat(50))], []
