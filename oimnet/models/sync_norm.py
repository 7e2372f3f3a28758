"""Batch statistics synchronised over the ranks of a process group: ProtoNorm's and BatchNorm's.

One autograd Function serves both.  Each rank holds its own rows (RoIs or
images) x_i (n_r, C, *spatial) and, for ProtoNorm, its rows' slice w_i of
the prototype weights computed on the labels of *all* ranks (they sum to 1
over every rank; :func:`oimnet.models.protonorm.prototype_coefficients`).
The normalisation is the one a single process computes on the
concatenated batch:

    mean = sum_i w_i xbar_i        (xbar_i: spatial mean of row i; BatchNorm: w_i = 1/N)
    var  = mean over all rows and positions of (x - mean)^2

Forward: one all-gather of each rank's (C,) partial weighted sum, (C,) mean
and (C,) sum of squared deviations around it and its row count; the
variance is combined exactly from these (parallel-variance formula), so
every rank gets the same statistics and the same running-statistics update.
Backward: one all-reduce of the (2, C) sums S_g = sum g and
S_gy = sum g * yhat (g = dL/dy of the rank's own loss), then, with M the
global number of values per channel and HW the positions per row,

    dx = weight * invstd * (g - yhat * S_gy / M - w_i / HW * (S_g - S_y * S_gy / M)),
    S_y = M * (xbar - mean) * invstd  (xbar the global mean of all values),

i.e. the gradient of the *sum* of the ranks' losses; DDP then averages the
parameter gradients over the ranks, so a loss that each rank scales so that
the ranks' mean is the one-process loss gives the one-process gradient.
The affine weight/bias gradients are the rank's own sums (DDP reduces them).

torch.nn.SyncBatchNorm runs only on GPUs (it raises on CPU tensors), so on
CPU (gloo) :class:`GlooSyncBatchNorm` stands in for it with this Function;
:func:`convert_sync_batchnorm` picks one by the module's device.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from oimnet.distributed import is_distributed

__all__ = ["sync_weighted_norm", "update_running_stats_", "GlooSyncBatchNorm", "convert_sync_batchnorm"]


def update_running_stats_(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, m: int, factor: float
) -> None:
    """running <- (1 - factor) running + factor batch, with the unbiased variance (m values per channel), as BatchNorm.

    ``var`` (C,) is the biased batch variance; it is overwritten.
    """
    var.mul_(m / (m - 1))
    if mean.dtype is not running_mean.dtype:
        mean, var = mean.to(running_mean.dtype), var.to(running_var.dtype)
    torch._foreach_lerp_([running_mean, running_var], [mean, var], factor)


class _SyncWeightedNormFunction(torch.autograd.Function):
    """(n, C, *spatial) normalisation with the weighted-mean statistics of all ranks (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, w, eps, running_mean, running_var, factor):
        n, c = x.shape[:2]
        positions = math.prod(x.shape[2:])
        dtype = torch.promote_types(x.dtype, torch.float32)
        flat = x.reshape(n, c, positions).to(dtype)
        row_mean = flat.mean(2)  # (n, C)
        xbar = row_mean.mean(0) if n else row_mean.new_zeros(c)
        m2 = (row_mean - xbar).square_().sum(0).mul_(positions)  # squared deviations around xbar
        if positions > 1:
            m2 += (flat - row_mean[:, :, None]).square_().sum((0, 2))
        contrib = w.to(dtype) @ row_mean if w is not None else xbar.new_zeros(c)
        local = torch.cat([contrib, xbar, m2, xbar.new_tensor([float(n)])])
        every = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(every, local)
        stats = torch.stack(every)  # (W, 3C + 1), rank order
        counts = stats[:, -1]
        n_total = int(round(float(counts.sum())))
        m_total = n_total * positions
        if m_total < 2:
            raise ValueError(
                f"synchronised batch norm: expected more than 1 value per channel over all ranks, got {m_total}"
            )
        share = counts / n_total
        xbar_all = share @ stats[:, c : 2 * c]
        mean = stats[:, :c].sum(0) if w is not None else xbar_all
        dev = stats[:, c : 2 * c] - mean
        var = (stats[:, 2 * c : 3 * c].sum(0) + positions * (counts @ dev.square())) / m_total
        invstd = torch.rsqrt(var + eps)
        y = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, torch.backends.cudnn.enabled)
        if running_mean is not None:
            update_running_stats_(running_mean, running_var, mean, var.clone(), m_total, factor)
        row_w = (w.to(dtype) if w is not None else xbar.new_full((n,), 1.0 / n_total)) / positions
        ctx.save_for_backward(x, weight, mean, invstd, xbar_all, row_w)
        ctx.m_total = m_total
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd, xbar_all, row_w = ctx.saved_tensors
        m_total = ctx.m_total
        n, c = x.shape[:2]
        dtype = mean.dtype
        g = grad_out.reshape(n, c, -1).to(dtype)
        yhat = (x.reshape(n, c, -1).to(dtype) - mean[:, None]) * invstd[:, None]
        sums = torch.stack((g.sum((0, 2)), (g * yhat).sum((0, 2))))  # local S_g, S_gy
        local_g, local_gy = sums.clone().unbind(0)
        dist.all_reduce(sums)
        s_g, s_gy = sums.unbind(0)
        s_y = m_total * (xbar_all - mean) * invstd
        scale = invstd if weight is None else invstd * weight.to(dtype)
        per_row = scale * (s_g - s_y * s_gy / m_total)  # (C,)
        grad_in = (g - yhat * (s_gy / m_total)[:, None]) * scale[:, None]
        grad_in -= row_w[:, None, None] * per_row[None, :, None]
        grad_in = grad_in.reshape(x.shape).to(x.dtype)
        if weight is None:
            return grad_in, None, None, None, None, None, None, None
        grad_weight = local_gy.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = local_g.to(weight.dtype) if ctx.needs_input_grad[2] else None
        return grad_in, grad_weight, grad_bias, None, None, None, None, None


def sync_weighted_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    row_weights: Tensor | None,
    eps: float,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    factor: float,
) -> Tensor:
    """Normalise x (n, C, *spatial) with the statistics of every rank's rows (call on every rank).

    ``row_weights`` (n,): this rank's rows of the global mean weights
    (ProtoNorm), or None for the plain mean (BatchNorm).  Running
    statistics, when given, are updated in place with momentum ``factor``
    (variance stored unbiased over all ranks' values), identically on every rank.
    """
    if row_weights is not None and row_weights.shape != (x.shape[0],):
        raise ValueError(f"sync_weighted_norm: row_weights {tuple(row_weights.shape)}: expected ({x.shape[0]},)")
    return _SyncWeightedNormFunction.apply(x, weight, bias, row_weights, eps, running_mean, running_var, factor)


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm with statistics over every rank of the default process group; works on CPU (gloo).

    Same parameters, buffers and state-dict keys as BatchNorm1d/2d; plain
    BatchNorm when not training or without a multi-rank process group.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlooSyncBatchNorm: expected at least a 2-d input (N, C, ...), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training or not self.track_running_stats:
            return super().forward(x)
        factor = self.momentum if self.momentum is not None else 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        if not is_distributed():
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)
        return sync_weighted_norm(
            x, self.weight, self.bias, None, self.eps, self.running_mean, self.running_var, factor
        )


_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every plain BatchNorm in ``module`` by a synchronised one with the same state; returns the module.

    CUDA modules get torch.nn.SyncBatchNorm, others :class:`GlooSyncBatchNorm`.
    ProtoNorms (synchronised by themselves) and already converted layers are
    left alone. The new layers hold the old layers' parameter and buffer
    objects (requires_grad and optimizer membership kept) and train/eval mode.
    """
    if isinstance(module, _PLAIN_BATCHNORMS):
        return _sync_from_bn(module)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _sync_from_bn(bn: _BatchNorm) -> _BatchNorm:
    ref = bn.weight if bn.affine else bn.running_mean
    cls = nn.SyncBatchNorm if ref is not None and ref.device.type == "cuda" else GlooSyncBatchNorm
    ref = ref if ref is not None else torch.empty(0)
    new = cls(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device=ref.device, dtype=ref.dtype
    )
    # The very parameter and buffer objects, not copies: an optimizer built on the
    # model before the conversion must still hold (and update) the norms' weights.
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(bn, name))
    new.train(bn.training)
    return new
