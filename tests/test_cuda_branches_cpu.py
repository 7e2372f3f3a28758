"""The arithmetic of the code paths that only a GPU takes, run on the CPU.

- OIMLoss reads labels, queue head and IoUs back from a GPU in one packed
  float64 copy (:func:`oimnet.losses.oim.packed_to_host`); on the CPU it
  reads the tensors directly.
- ProtoNorm1d's backward passes a ones weight to torch's batch-norm backward
  off the CPU (CUDA's kernel returns no weight/bias sums without one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oimnet.losses import OIMLoss
from oimnet.losses.oim import packed_to_host
from oimnet.models import protonorm
from oimnet.models.protonorm import ProtoNorm1d

UNLABELED = 5555


@pytest.mark.parametrize("iou_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32])
def test_packed_host_transfer_is_exact(label_dtype, iou_dtype):
    """Labels (up to 2^31 - 1, or 2^53 - 1 for int64), head and IoUs come back exactly as the direct reads give them."""
    big = 2**53 - 1 if label_dtype == torch.int64 else 2**31 - 1
    labels = torch.tensor([0, 3, UNLABELED, 1, big, 0, 7], dtype=label_dtype)
    ious = torch.tensor([0.0, 0.71, 0.5, 0.999, 0.3, 1.0, 0.123456789], dtype=iou_dtype)
    head = torch.tensor(4093, dtype=torch.int64)
    host_labels, host_head, host_ious = packed_to_host(labels, head, ious)
    assert host_labels.dtype == np.int64 and host_ious.dtype == np.float64
    np.testing.assert_array_equal(host_labels, labels.long().numpy())
    assert host_head == 4093 and isinstance(host_head, int)
    np.testing.assert_array_equal(host_ious, ious.double().numpy())  # the IoU dtype's own values, no rounding
    # without IoUs (OIM)
    only_labels, only_head, none = packed_to_host(labels, head, None)
    np.testing.assert_array_equal(only_labels, host_labels)
    assert only_head == 4093 and none is None


@pytest.mark.parametrize("loss_type", ["OIM", "LOIM"])
def test_memory_update_from_the_packed_transfer_equals_the_cpu_path(loss_type):
    """The update a GPU step runs (packed copy, then the host plan) leaves the same LUT, queue and head as the CPU path."""
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(30, 16, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 1, UNLABELED, 3, 3, 3, 0, UNLABELED] * 3)
    ious = torch.rand(30, generator=g) * 0.5 + 0.5
    direct = OIMLoss(num_features=16, num_pids=5, num_cq_size=7, loss_type=loss_type).train()
    packed = OIMLoss(num_features=16, num_pids=5, num_cq_size=7, loss_type=loss_type).train()
    for m in (direct, packed):
        m.cq_head.fill_(5)  # the queue wraps
    direct(x, labels, ious)
    with torch.no_grad():
        packed._update(x, *packed_to_host(labels, packed.cq_head, ious if loss_type == "LOIM" else None))
    torch.testing.assert_close(packed.lut, direct.lut, rtol=0, atol=0)
    torch.testing.assert_close(packed.cq, direct.cq, rtol=0, atol=0)
    assert int(packed.cq_head) == int(direct.cq_head) == (5 + 6) % 7
    assert direct.lut.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_protonorm1d_backward_with_a_ones_weight(monkeypatch, dtype):
    """The CUDA branch of the ProtoNorm1d backward (ones weight, no affine) gives the CPU branch's gradient."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(48, 8, generator=g, dtype=torch.float64) * 2 + 1).to(dtype)
    labels = torch.tensor([0, 0, 2, 2, 2, UNLABELED, 4, UNLABELED] * 6)
    grad = torch.randn(48, 8, generator=g, dtype=torch.float64).to(dtype)

    def input_grad(ones_on_cpu: bool) -> torch.Tensor:
        monkeypatch.setattr(protonorm, "_ONES_WEIGHT_ON_CPU", ones_on_cpu)
        m = ProtoNorm1d(8).to(torch.float64 if dtype == torch.float64 else torch.float32)
        assert m.weight is None
        xi = x.clone().requires_grad_()
        m(xi, labels).backward(grad)
        return xi.grad

    cpu_branch, cuda_branch = input_grad(False), input_grad(True)
    assert cuda_branch.dtype == dtype and torch.isfinite(cuda_branch).all() and cuda_branch.abs().sum() > 0
    torch.testing.assert_close(cuda_branch, cpu_branch, rtol=0, atol=0)
    # and the gradient is ProtoNorm's (sum over RoIs of dL/dx is 0: the output does not move with a shift of x)
    torch.testing.assert_close(
        cuda_branch.double().sum(0),
        torch.zeros(8, dtype=torch.float64),
        atol=2e-2 if dtype == torch.float16 else 1e-6,
        rtol=0,
    )
