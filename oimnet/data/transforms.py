"""Image/box transforms for detection: resize, horizontal flip, to-tensor.

All functions take and return boxes as (n, 4) x1, y1, x2, y2 in pixels of
the image they accompany.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def resize_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """Scale that makes the shorter side ``min_size`` unless the longer side
    would then exceed ``max_size`` (then the longer side is ``max_size``)."""
    short, long = min(width, height), max(width, height)
    return min(min_size / short, max_size / long)


def resize(img: Image.Image, boxes: np.ndarray, min_size: int, max_size: int) -> tuple[Image.Image, np.ndarray, float]:
    """Bilinear resize by :func:`resize_scale`; boxes scaled by the same factor.

    Returns (image, boxes float32 (n, 4), scale = resized / original).
    """
    w, h = img.size
    scale = resize_scale(w, h, min_size, max_size)
    new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new_size != (w, h):
        img = img.resize(new_size, Image.BILINEAR)
    return img, (np.asarray(boxes, np.float32) * np.float32(scale)).astype(np.float32), float(scale)


def hflip(img: Image.Image, boxes: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Mirror left-right: x1' = W - x2, x2' = W - x1."""
    w = img.size[0]
    boxes = np.asarray(boxes, np.float32).copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return img.transpose(Image.FLIP_LEFT_RIGHT), boxes


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
