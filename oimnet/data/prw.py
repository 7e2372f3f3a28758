"""PRW (``PRW-v16.04.20/``) read from an untouched download.

Layout and quirks of the download, and how the authors' loader reads it
(this module gives the same records; docs/fidelity.md):

* ``frame_train.mat`` / ``frame_test.mat`` list the frames of each split
  (variables ``img_index_train`` / ``img_index_test``, names without ``.jpg``).
* ``annotations/<name>.jpg.mat`` holds rows ``[id, x, y, w, h]`` under the
  first present of ``box_new``, ``anno_file``, ``anno_previous``.
* Boxes become integers as the authors' loader makes them. Frame
  annotations: (x, y, w, h) clipped at 0 in the file's dtype, x2 = x + w
  added in that dtype, then truncated to int32. Query boxes: x2 = x + w in
  float64, truncated to int32 (toward zero), then clipped at 0.
* ids -2, 483 and 932 are unlabeled (pid 5555) in every split, train and
  gallery alike; query pids are kept as written in ``query_info.txt``.
* ``query_info.txt``: ``pid x y w h name`` per line, Windows line endings.
* Camera id: the digits after ``c`` in the file name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np

from oimnet.constants import UNLABELED_PID

from .matutil import get_var, load_mat, mat_str
from .records import DatasetError, make_record, xywh_to_xyxy

ANNOTATION_KEYS = ("box_new", "anno_file", "anno_previous")
UNLABELED_IDS = (-2, 483, 932)
SPLIT_FILES = {"train": ("frame_train.mat", "img_index_train"), "gallery": ("frame_test.mat", "img_index_test")}
QUERY_FILE = "query_info.txt"
FRAME_DIR = "frames"
ANNOTATION_DIR = "annotations"

_CAM_RE = re.compile(r"c(\d+)")


def camera_id(img_name: str) -> int:
    """Camera of a PRW frame name: ``c3s2_012345.jpg`` -> 3."""
    match = _CAM_RE.search(img_name)
    if match is None:
        raise DatasetError(f"{img_name}: frame name has no camera id (expected 'c<digit>' as in c1s1_000151.jpg)")
    return int(match.group(1))


def split_frame_names(root: str, split: str) -> list[str]:
    """Frame names (with ``.jpg``) of the train or gallery split, file order."""
    fname, var = SPLIT_FILES[split]
    arr = get_var(load_mat(os.path.join(root, fname), fname), var, fname)
    names = []
    for i, cell in enumerate(np.asarray(arr).reshape(-1, order="F")):
        name = mat_str(cell, f"{fname}: {var}[{i}]")
        names.append(name if name.endswith(".jpg") else name + ".jpg")
    return names


def read_annotation(root: str, img_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows of ``annotations/<img_name>.mat``.

    Returns (ids (n,), boxes_xywh (n, 4)) unclipped, in the file's dtype
    (the box arithmetic of :func:`frame_record` happens in that dtype).
    """
    label = f"{ANNOTATION_DIR}/{img_name}.mat"
    mat = load_mat(os.path.join(root, ANNOTATION_DIR, img_name + ".mat"), label)
    key = next((k for k in ANNOTATION_KEYS if k in mat), None)
    if key is None:
        raise DatasetError(f"{label}: none of {', '.join(ANNOTATION_KEYS)} found")
    rows = np.asarray(mat[key])
    if rows.size == 0:
        return np.zeros(0), np.zeros((0, 4))
    if rows.ndim != 2 or rows.shape[1] != 5 or rows.dtype.kind not in "iuf":
        raise DatasetError(
            f"{label}: {key} should be an n x 5 numeric array [id, x, y, w, h], "
            f"found shape {rows.shape} dtype {rows.dtype}"
        )
    return rows[:, 0], rows[:, 1:]


def frame_boxes(boxes_xywh: np.ndarray) -> np.ndarray:
    """(n, 4) x, y, w, h -> int32 (n, 4) x1, y1, x2, y2: clip at 0, add, truncate."""
    boxes = np.clip(boxes_xywh, 0, None)
    boxes[:, 2:] += boxes[:, :2]
    return boxes.astype(np.int32)


def query_box(xywh: np.ndarray) -> np.ndarray:
    """(4,) float64 x, y, w, h -> int32 (4,) x1, y1, x2, y2: add, truncate, clip at 0."""
    return np.clip(xywh_to_xyxy(xywh)[0].astype(np.int32), 0, None)


def frame_record(root: str, img_name: str, ids: np.ndarray, boxes_xywh: np.ndarray) -> dict:
    """Record of one frame from its raw annotation rows (integer boxes, relabel)."""
    boxes = frame_boxes(boxes_xywh)
    pids = ids.astype(np.int64)
    pids[np.isin(pids, UNLABELED_IDS)] = UNLABELED_PID
    return make_record(img_name, os.path.join(root, FRAME_DIR, img_name), boxes, pids, camera_id(img_name))


def read_queries(root: str) -> list[dict]:
    """Query records from ``query_info.txt`` (one box each, its pid)."""
    path = os.path.join(root, QUERY_FILE)
    if not os.path.isfile(path):
        raise DatasetError(f"{QUERY_FILE}: file not found (expected lines 'pid x y w h name')")
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").splitlines()  # handles \r\n
    queries = []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DatasetError(
                f"{QUERY_FILE}:{lineno}: expected 6 fields 'pid x y w h name', found {len(parts)}: {line!r}"
            )
        try:
            pid = int(float(parts[0]))
            xywh = np.array([float(v) for v in parts[1:5]])
        except ValueError as exc:
            raise DatasetError(f"{QUERY_FILE}:{lineno}: non-numeric pid/box in {line!r}") from exc
        img_name = parts[5] if parts[5].endswith(".jpg") else parts[5] + ".jpg"
        box = query_box(xywh)
        queries.append(make_record(img_name, os.path.join(root, FRAME_DIR, img_name), box, [pid], camera_id(img_name)))
    return queries


def parse_prw(root: str, on_error: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """All three splits of a PRW-format root: {"train", "gallery", "query"}.

    A broken annotation file raises DatasetError, or, when ``on_error`` is
    given, is reported to it and its frame skipped (used by ``data.check``).
    """
    out = {}
    for split in ("train", "gallery"):
        records = []
        for name in split_frame_names(root, split):
            try:
                ids, boxes = read_annotation(root, name)
                records.append(frame_record(root, name, ids, boxes))
            except DatasetError as exc:
                if on_error is None:
                    raise
                on_error(str(exc))
        out[split] = records
    out["query"] = read_queries(root)
    return out


def input_files(root: str) -> tuple[list[str], list[str]]:
    """(files, directories) whose contents the parsed annotations depend on."""
    return (
        [os.path.join(root, f) for f in ("frame_train.mat", "frame_test.mat", QUERY_FILE)],
        [os.path.join(root, ANNOTATION_DIR)],
    )
