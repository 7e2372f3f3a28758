"""Small heads on the pooled res5 feature: box predictor and re-id embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.rpn import RPNHead

from oimnet.constants import NORM_TYPES
from oimnet.models.precision import at_least_float32
from oimnet.models.protonorm import ProtoNorm1d

__all__ = ["BoxPredictor", "EmbeddingHead", "Float32RPNHead", "NORM_TYPES", "EMBEDDING_DIM"]

EMBEDDING_DIM = 256


class BoxPredictor(nn.Module):
    """Person/background logits and class-specific box deltas.

    (R, C5) -> logits (R, 2), deltas (R, 8) (background then person, each
    dx, dy, dw, dh in the box coder's weighted units).
    """

    def __init__(self, in_channels: int, num_classes: int = 2):
        super().__init__()
        self.bbox_cls = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4 * num_classes)
        for layer in (self.bbox_cls, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bbox_cls(x), self.bbox_pred(x)


class Float32RPNHead(RPNHead):
    """torchvision's RPNHead with float32 outputs (objectness (N, A, H, W), deltas (N, 4A, H, W) per level)
    (float64 ones in a float64 model).

    Under autocast the convolutions give half outputs, and torchvision decodes
    the proposals in the dtype of the deltas: float16 has a spacing of 0.5 px
    at 512-1024 and 1 px at 1024-2048, so paper-size (900 x 1500) proposals
    would be rounded to whole pixels and objectness ties would reorder them.
    Same parameters and state-dict keys as RPNHead.
    """

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = super().forward(x)
        return [at_least_float32(t) for t in logits], [at_least_float32(t) for t in deltas]


class EmbeddingHead(nn.Module):
    """Re-id embedding: Linear C5 -> 256 (no bias), the variant's norm, L2 normalize.

    Layout ``projectors.feat_res5.{0,1}`` mirrors the release's keys; index 1
    exists only for norm types "batchnorm" and "protonorm" (both without
    affine parameters, so their state is running_mean/var and
    num_batches_tracked only).
    """

    def __init__(self, in_channels: int, norm_type: str = "none", dim: int = EMBEDDING_DIM):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"MODEL.ROI_HEAD.NORM_TYPE {norm_type!r}: expected one of {NORM_TYPES}")
        self.norm_type = norm_type
        linear = nn.Linear(in_channels, dim, bias=False)
        nn.init.normal_(linear.weight, std=0.01)
        layers: list[nn.Module] = [linear]
        if norm_type == "batchnorm":
            layers.append(nn.BatchNorm1d(dim, affine=False))
        elif norm_type == "protonorm":
            layers.append(ProtoNorm1d(dim, affine=False))
        self.projectors = nn.ModuleDict({"feat_res5": nn.Sequential(*layers)})

    def forward(self, feat_res5: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """feat_res5 (R, C5), labels (R,) RoI labels for ProtoNorm in training -> (R, 256) unit rows."""
        proj = self.projectors["feat_res5"]
        x = proj[0](feat_res5)
        if self.norm_type == "protonorm":
            x = proj[1](x, labels)
        elif self.norm_type == "batchnorm":
            x = proj[1](x)
        return F.normalize(x, dim=1)
