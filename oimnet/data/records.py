"""The in-memory annotation record shared by every dataset format.

One image is one plain dict (see docs/interfaces.md, "Annotations")::

    {"img_name": "c1s1_000151.jpg",      # file name with extension
     "img_path": "/abs/.../c1s1_000151.jpg",
     "boxes": float32 (n, 4),            # x1, y1, x2, y2 in original pixels,
                                         # integers as the authors' loader truncates them
     "pids": int64 (n,),                 # identity per box, oimnet.constants.UNLABELED_PID (5555) = unlabeled
     "cam_id": int}                      # PRW camera, -1 for CUHK-SYSU
"""

from __future__ import annotations

import os

import numpy as np

SPLITS = ("train", "gallery", "query")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and
    what was expected there."""


def make_record(img_name: str, img_path: str, boxes_xyxy, pids, cam_id: int) -> dict:
    """Build one record with the contract's dtypes and shapes.

    boxes_xyxy: anything convertible to float32 (n, 4); pids: to int64 (n,).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    pids = np.asarray(pids, dtype=np.int64).reshape(-1)
    if len(boxes) != len(pids):
        raise DatasetError(f"{img_name}: {len(boxes)} boxes but {len(pids)} ids")
    return {
        "img_name": img_name,
        "img_path": os.path.abspath(img_path),
        "boxes": boxes,
        "pids": pids,
        "cam_id": int(cam_id),
    }


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x, y, w, h -> (n, 4) x1, y1, x2, y2 (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
