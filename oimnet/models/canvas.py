"""Training batches padded to one canvas on every rank, as one process pads the whole batch.

The model's transform zero-pads a batch to its largest image (rounded up
to a multiple of 32). One process on the global batch pads all images to
the largest of them; N ranks would each pad to the largest of their own
share. The padded zeros enter every backbone BatchNorm's batch statistics
(the stem's bn1 first) and the RPN's anchor grid follows the canvas, so
with mixed image sizes (CUHK-SYSU; PRW's frames are all one size) the
ranks would no longer train like one process. :class:`CommonCanvasTransform`
pads each rank's training batch to the largest canvas over the ranks (one
all-reduce of two integers per step). In eval mode, or without a
multi-rank process group, it pads like torchvision's transform: evaluation
shards run different numbers of batches, so it makes no collective there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from oimnet.distributed import all_reduce_max, collective_device, is_distributed

__all__ = ["CommonCanvasTransform", "use_common_canvas"]


class CommonCanvasTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform whose training batches share one (H, W) canvas over the ranks."""

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        """(N, 3, H, W) zero-padded batch; H, W the largest over every rank's batch in training."""
        batched = super().batch_images(images, size_divisible)
        if not (self.training and is_distributed()):
            return batched
        h, w = batched.shape[-2:]
        # Each rank's canvas is already a multiple of size_divisible, so their maximum is too.
        canvas = all_reduce_max(torch.tensor([h, w], dtype=torch.int64, device=collective_device()))
        big_h, big_w = (int(v) for v in canvas.tolist())
        return F.pad(batched, (0, big_w - w, 0, big_h - h)) if (big_h, big_w) != (h, w) else batched


def use_common_canvas(model: nn.Module) -> nn.Module:
    """Give the detector (or its ``.module``) a :class:`CommonCanvasTransform` with the same settings; returns it."""
    core = getattr(model, "module", model)
    old = core.transform
    if isinstance(old, CommonCanvasTransform):
        return model
    new = CommonCanvasTransform(
        min_size=old.min_size,
        max_size=old.max_size,
        image_mean=old.image_mean,
        image_std=old.image_std,
        size_divisible=old.size_divisible,
        fixed_size=old.fixed_size,
        _skip_resize=old._skip_resize,
    )
    core.transform = new.train(old.training)
    return model
