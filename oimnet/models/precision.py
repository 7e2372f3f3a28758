"""The dtype the detection heads compute in: float32, or float64 when the model runs in float64.

Under autocast the heads' convolutions give float16 tensors; proposal
decoding, box matching and the detection losses are computed in float32
(see :class:`oimnet.models.heads.Float32RPNHead`). A model converted with
``.double()`` keeps float64 throughout instead of being cut back to float32
there, so a float64 run is float64 end to end (the multi-worker equality
test runs one: in float64 rounding cannot move a ReLU input across zero).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["at_least_float32"]


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` as float32 when it is a narrower float (or an integer), else unchanged (float32/float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
