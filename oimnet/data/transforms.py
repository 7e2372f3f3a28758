"""Image/box transforms of the data loader: horizontal flip and to-tensor.

Images stay at their original size: the model resizes them (see
``oimnet.models.detector``). Boxes are (n, 4) x1, y1, x2, y2 in pixels of
the image they accompany.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def hflip(img: Image.Image, boxes: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Mirror left-right: x1' = W - x2, x2' = W - x1 (the release's flip)."""
    w = img.size[0]
    boxes = np.asarray(boxes, np.float32).copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return img.transpose(Image.FLIP_LEFT_RIGHT), boxes


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> contiguous float32 tensor (3, H, W) in [0, 1].

    Bitwise equal to ``torchvision.transforms.functional.to_tensor`` (uint8
    -> float32, then divided by 255), in one conversion pass instead of two.
    """
    arr = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))  # writable HWC copy
    out = torch.empty((3, arr.shape[0], arr.shape[1]), dtype=torch.float32)
    out.copy_(arr.permute(2, 0, 1))
    return out.div_(255.0)
