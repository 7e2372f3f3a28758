"""Wrap a detector for data-parallel training over the ranks of the default process group.

What one rank of N needs so that N ranks train like one process on the
concatenated batch:
- plain BatchNorm layers synchronised (torch.nn.SyncBatchNorm on GPUs, a
  gloo-capable equivalent on CPU; ProtoNorms synchronise themselves);
- anchor/RoI sampling keyed per image (:mod:`oimnet.models.sampling`), so
  each image samples what it samples in one process;
- training batches padded to one canvas over the ranks
  (:mod:`oimnet.models.canvas`), as one process pads the whole batch;
- DistributedDataParallel with ``broadcast_buffers=False``: every rank
  updates the OIM memory and the running statistics identically itself;
  broadcasting rank 0's buffers each step would only hide a divergence
  (checkpoints compare digests instead).
With one rank (no process group) the model is returned unchanged.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from oimnet.distributed.comm import is_distributed
from oimnet.models.canvas import use_common_canvas
from oimnet.models.sampling import use_keyed_sampling
from oimnet.models.sync_norm import convert_sync_batchnorm

__all__ = ["wrap_data_parallel", "unwrap"]


def wrap_data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """The model prepared for this rank (see the module docstring); unchanged without a multi-rank group."""
    if not is_distributed():
        return model
    model = convert_sync_batchnorm(use_common_canvas(use_keyed_sampling(model)))
    device_ids = [device] if device.type == "cuda" else None
    # No buffer broadcast in forward (the parameters and buffers are still synced once at construction).
    # Newer torch names it forward_sync_buffers and deprecates broadcast_buffers.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
