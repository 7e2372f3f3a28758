"""ProtoNorm (OIMNet++): batch normalization whose mean is the mean of identity prototypes.

In training, per channel: the prototypes of a batch are one per labeled
identity present (mean of its RoIs), one per unlabeled RoI (each its own) and
one for the background (mean of all background RoIs).  mean = mean of the
prototypes, var = mean over *all* RoIs (and positions, for 2-d) of
(x - mean)^2.  Eval mode uses the running statistics, like BatchNorm.

Vectorized form: the mean of P prototypes equals sum_i w_i * xbar_i with
w_i = 1 / (P * n_g(i)), xbar_i the spatial mean of RoI i and n_g the size of
its prototype group, so the mean is one weighted sum.  The variance around
that mean follows from BatchNorm's batch statistics (1-d) or per-RoI means
and variances (2-d), one pass over x.  The output is torch's batch norm with
these statistics; the backward is torch's batch-norm backward, which assumes
an unweighted mean, plus a per-RoI correction; see the two Functions.

With a multi-rank process group (training under DDP) the prototypes are
those of every rank's RoIs (labels gathered: identities are global ids) and
the statistics are combined over the ranks before the mean and variance
(:mod:`oimnet.models.sync_norm`), so every rank normalises with, and stores,
the statistics one process would compute on the concatenated batch.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from oimnet.constants import UNLABELED_PID
from oimnet.distributed import all_gather_rows, gather_counts, get_rank, is_distributed
from oimnet.models.sync_norm import sync_weighted_norm, update_running_stats_

__all__ = [
    "ProtoNorm1d",
    "ProtoNorm2d",
    "UNLABELED_ID",
    "prototype_weights",
    "prototype_coefficients",
    "rank_prototype_coefficients",
    "set_protonorm_labels",
    "convert_bn2d_to_protonorm",
]

UNLABELED_ID = UNLABELED_PID  # label of an unlabeled person RoI in the data


def prototype_weights(labels: Tensor, unlabeled_id: int = UNLABELED_ID, dtype: torch.dtype = torch.float64) -> Tensor:
    """Weight (N,) of each RoI in the mean of prototypes: 1 / (P * size of its prototype group).

    labels (N,) int: 0 background (one group), ``unlabeled_id`` (each RoI a
    group of its own), any other value one group per value.  The weights sum to 1.
    """
    return prototype_coefficients(labels, unlabeled_id, dtype)[0]


def prototype_coefficients(
    labels: Tensor, unlabeled_id: int = UNLABELED_ID, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(3, N) rows [w; 1/N; -w], w the :func:`prototype_weights`: what the ProtoNorm functions use, built in one go.

    Built with NumPy for CPU labels (a few microseconds, no torch op per row).
    """
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"ProtoNorm labels {tuple(labels.shape)} {labels.dtype}: expected a 1-d integer tensor")
    n = labels.shape[0]
    if labels.is_cpu and n:
        coef = _prototype_coefficients_host(
            labels.numpy(), unlabeled_id, np.float32 if dtype is torch.float32 else np.float64
        )
        if coef is not None:
            coef = torch.from_numpy(coef)
            return coef if coef.dtype is dtype else coef.to(dtype)
    # Unlabeled RoIs get distinct negative keys so that each forms its own group.
    key = torch.where(labels == unlabeled_id, torch.arange(-1, -1 - n, -1, device=labels.device), labels.long())
    _, group, counts = torch.unique(key, return_inverse=True, return_counts=True)
    w = counts.to(dtype).mul_(counts.numel()).reciprocal_().index_select(0, group)
    return torch.stack((w, torch.full_like(w, 1.0 / max(n, 1)), w.neg()))


def _prototype_coefficients_host(labels: np.ndarray, unlabeled_id: int, dtype) -> np.ndarray | None:
    """[w; 1/N; -w] (3, N) of ``dtype`` from a histogram of the labels; None if they are out of its range."""
    n = labels.shape[0]
    if labels.max() > 4 * n + 65536:
        return None
    try:
        counts = np.bincount(labels)
    except ValueError:  # negative labels
        return None
    n_unlabeled = int(counts[unlabeled_id]) if 0 <= unlabeled_id < counts.shape[0] else 0
    if n_unlabeled:  # each unlabeled RoI is a group of size 1
        counts[unlabeled_id] = 1
    n_prototypes = np.count_nonzero(counts) + n_unlabeled - (n_unlabeled > 0)
    coef = np.empty((3, n), dtype=dtype)
    np.divide(1.0 / n_prototypes, counts[labels], out=coef[0], casting="unsafe")
    coef[1] = 1.0 / n
    np.negative(coef[0], out=coef[2])
    return coef


def rank_prototype_coefficients(
    labels: Tensor, unlabeled_id: int = UNLABELED_ID, dtype: torch.dtype = torch.float32
) -> Tensor:
    """:func:`prototype_coefficients` of the labels of every rank, this rank's columns (3, n).

    With a multi-rank process group the labels (n_r,) of all ranks are
    gathered in rank order (identities are global ids), the prototypes are
    those of the concatenated batch, and this rank keeps the columns of its
    own RoIs: [w; 1/N; -w] with N the global RoI count.  Without one, the
    plain :func:`prototype_coefficients`.  A collective: every rank calls it.
    """
    if not is_distributed():
        return prototype_coefficients(labels, unlabeled_id, dtype)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"ProtoNorm labels {tuple(labels.shape)} {labels.dtype}: expected a 1-d integer tensor")
    counts = gather_counts(labels.shape[0], labels.device)
    every, _ = all_gather_rows(labels.long(), counts)
    start = sum(counts[: get_rank()])
    return prototype_coefficients(every, unlabeled_id, dtype)[:, start : start + labels.shape[0]]


def _once_differentiable(backward):
    """torch's ``once_differentiable`` (backward not differentiable again), without its cost in the usual case.

    The autograd engine runs a backward with grad mode off unless
    ``create_graph=True``; then the wrapped function goes through
    ``once_differentiable``, which raises if its result is differentiated.
    """
    guarded = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            return guarded(ctx, *grads)
        return backward(ctx, *grads)

    return wrapper


class _ProtoNorm1dFunction(torch.autograd.Function):
    """(N, C) ProtoNorm on torch's batch-norm kernels; updates the running statistics in forward.

    Forward: BatchNorm's batch statistics (mean xbar, biased var_b; one read of
    x, no output) give the variance around the prototype mean m = sum_i w_i x_i
    as var = var_b + (xbar - m)^2; then y = (x - m) * invstd [* weight + bias]
    as one per-channel affine map.
    Backward, with yhat = (x - m) * invstd, g = dL/dyhat, S_g = sum_i g_i,
    S_gy = sum_i g_i yhat_i and q = S_y / N = (xbar - m) * invstd:
        dx_i = invstd * (g_i - yhat_i * S_gy / N) - w_i * invstd * (S_g - q * S_gy);
    torch's batch-norm backward given (m, invstd) returns
    invstd * (g_i - S_g / N - yhat_i * S_gy / N) with S_gy and S_g, so one
    rank-2 update [1/N, -w_i] x [invstd S_g; invstd (S_g - q S_gy)] completes it.
    At this size (640 x 256) a pass over the data costs about as much as a
    handful of small ops, so the count of both is kept low.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, coef, eps, running_mean, running_var, factor):
        # Every call here costs microseconds at this size, so no-op conversions are skipped.
        ctx.input_dtype = dtype = x.dtype
        if dtype not in _COMPUTE_DTYPES:  # half (AMP) is computed in float32
            x = x.float()
        if coef.dtype != x.dtype:
            coef = coef.to(x.dtype)
        xbar, var = torch.batch_norm_update_stats(x, None, None, 0.0)  # biased var_b
        mean = coef[0] @ x
        q = xbar.sub_(mean)
        var.addcmul_(q, q)
        invstd = var.add(eps).rsqrt_()
        # y = x * scale + shift: on CPU one addcmul is about half the time of the eval-mode batch-norm kernel.
        if weight is None:
            y = torch.addcmul(mean.mul(invstd).neg_(), x, invstd)
        else:
            scale = invstd * weight
            y = torch.addcmul(torch.addcmul(bias, mean, scale, value=-1.0), x, scale)
        q.mul_(invstd)
        ctx.save_for_backward(x, weight, coef, mean, invstd, q)
        # Buffers updated in place in eager mode (no mark_dirty: they are not outputs).
        update_running_stats_(running_mean, running_var, mean, var, x.shape[0], factor)
        return y if dtype is y.dtype else y.to(dtype)  # the input dtype, as BatchNorm

    @staticmethod
    @_once_differentiable
    def backward(ctx, grad_out):
        x, weight, coef, mean, invstd, q = ctx.saved_tensors
        if grad_out.dtype != x.dtype:
            grad_out = grad_out.to(x.dtype)
        # CUDA's kernels return empty weight/bias gradients (the sums below) when
        # there is no weight; CPU's return them, and skipping the ones saves an op.
        ones = weight is None and (_ONES_WEIGHT_ON_CPU or not x.is_cpu)
        gamma = torch.ones_like(mean) if ones else weight
        grad_in, s_gy, s_g = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, gamma, None, None, mean, invstd, True, 0.0, _ALL_GRADS
        )
        # s_gy, s_g are sums of dL/dy; an affine weight is folded into `scale`.
        scale = invstd if weight is None else invstd * weight
        rows = torch.stack((s_g, torch.addcmul(s_g, q, s_gy, value=-1.0))).mul_(scale)
        grad_in.addmm_(coef[1:].t(), rows)  # columns [1/N, -w_i]
        if grad_in.dtype != ctx.input_dtype:
            grad_in = grad_in.to(ctx.input_dtype)
        if weight is None:
            return grad_in, None, None, None, None, None, None, None
        grad_weight = s_gy if ctx.needs_input_grad[1] else None
        grad_bias = s_g if ctx.needs_input_grad[2] else None
        return grad_in, grad_weight, grad_bias, None, None, None, None, None


_COMPUTE_DTYPES = (torch.float32, torch.float64)
# True: take the ones-weight branch of the 1-d backward on the CPU too, so that
# a CPU test checks the arithmetic every CUDA run takes.
_ONES_WEIGHT_ON_CPU = False
_ALL_GRADS = [True, True, True]


class _ProtoNorm2dFunction(torch.autograd.Function):
    """(N, C, H, W) ProtoNorm; updates the running statistics in forward.

    With HW = H*W positions per RoI, M = N*HW elements per channel,
    w_i = coef[0] (sum 1), yhat = (x - mean) * invstd, g = dL/dy,
    S_g = sum g, S_gy = sum g * yhat, S_y = sum yhat (per channel, over all M):
    d mean / d x[i, c, h, w] = w_i / HW, and
        dx = weight * invstd * (g - yhat * S_gy / M - w_i / HW * (S_g - S_y * S_gy / M)).
    torch's batch-norm backward, given our mean/invstd, returns
    weight * invstd * (g - S_g / M - yhat * S_gy / M) together with S_gy and S_g
    (as weight/bias grads), so only a per-(RoI, channel) term is added.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, coef, eps, running_mean, running_var, factor):
        n, c = x.shape[:2]
        dtype = torch.promote_types(x.dtype, torch.float32)
        w = coef[0].to(dtype)
        positions = x.shape[2] * x.shape[3]
        # Per-RoI moments over the positions, two-pass for accuracy (reductions
        # over the contiguous last dim are the fast ones).
        flat = x.reshape(n * c, positions).to(dtype)
        roi_mean = flat.mean(1)
        roi_sq = torch.linalg.vector_norm(flat - roi_mean[:, None], dim=1).square_().view(n, c)
        roi_mean = roi_mean.view(n, c)
        mean = w @ roi_mean
        # Variance around `mean`, combined from the per-RoI moments (equal sizes).
        offset = roi_mean - mean
        var = (roi_sq.sum(0) / positions + (offset * offset).sum(0)) / n
        xbar = roi_mean.mean(0)
        invstd = torch.rsqrt(var + eps)
        y = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, torch.backends.cudnn.enabled)
        update_running_stats_(running_mean, running_var, mean, var, n * positions, factor)
        ctx.save_for_backward(x, weight, mean, invstd, xbar, w / positions)
        return y

    @staticmethod
    @_once_differentiable
    def backward(ctx, grad_out):
        x, weight, mean, invstd, xbar, w = ctx.saved_tensors
        gamma = weight if weight is not None else torch.ones_like(mean)
        grad_in, s_gy, s_g = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, gamma, None, None, mean, invstd, True, 0.0, [True, True, True]
        )
        m = x.numel() // x.shape[1]
        s_y = invstd * m * (xbar - mean)
        scale = gamma.to(invstd.dtype) * invstd
        common = scale * s_g / m  # undoes batch-norm's unweighted-mean term
        per_roi = scale * (s_g - s_y * s_gy / m)
        correction = torch.outer(w, per_roi).neg_().add_(common).to(grad_in.dtype)
        grad_in.add_(correction[:, :, None, None])
        grad_weight = s_gy if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = s_g if weight is not None and ctx.needs_input_grad[2] else None
        return grad_in, grad_weight, grad_bias, None, None, None, None, None


class _ProtoNorm(_BatchNorm):
    """Shared body of ProtoNorm1d/2d; parameters and buffers exactly those of torch BatchNorm."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        unlabeled_id: int = UNLABELED_ID,
        device=None,
        dtype=None,
    ):
        super().__init__(num_features, eps, momentum, affine, True, device=device, dtype=dtype)
        self.unlabeled_id = int(unlabeled_id)
        self._labels: Tensor | None = None
        self._coef: Tensor | None = None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", unlabeled_id={self.unlabeled_id}"

    def set_labels(self, labels: Tensor | None, coef: Tensor | None = None) -> None:
        """Labels (N,) of the RoIs of the next training forward calls (None: plain BatchNorm).

        ``coef`` may pass precomputed ``prototype_coefficients(labels)``.
        """
        self._labels = labels
        if labels is None:
            self._coef = None
        else:
            # float64: exact for any input dtype (converted per call; the forward input dtype is not known yet).
            self._coef = (
                coef if coef is not None else rank_prototype_coefficients(labels, self.unlabeled_id, torch.float64)
            )

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """x (N, C) [1-d] or (N, C, H, W) [2-d]; labels (N,) per RoI, else those of ``set_labels``."""
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if labels is not None:
            coef = rank_prototype_coefficients(
                labels, self.unlabeled_id, torch.float64 if x.dtype is torch.float64 else torch.float32
            )
        else:
            labels, coef = self._labels, self._coef
        if labels is None:  # every RoI its own prototype: exactly BatchNorm
            factor = self._momentum_factor()
            if is_distributed():
                return sync_weighted_norm(
                    x, self.weight, self.bias, None, self.eps, self.running_mean, self.running_var, factor
                )
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)
        if labels.dim() != 1 or labels.shape[0] != x.shape[0]:  # ints: a torch.Size comparison is slower
            raise ValueError(
                f"{type(self).__name__}: labels {tuple(labels.shape)} do not match the {x.shape[0]} RoIs of the "
                f"input {tuple(x.shape)}; call set_protonorm_labels(model, labels) for this batch"
            )
        if coef.device != x.device:
            coef = coef.to(x.device)
        if torch.is_autocast_enabled(x.device.type):
            # Statistics in float32, as BatchNorm under AMP: autocast would run the
            # prototype-mean matmul (coef @ x) in half and mix dtypes in the backward.
            with torch.autocast(x.device.type, enabled=False):
                return self._normalize(x, coef)
        return self._normalize(x, coef)

    def _normalize(self, x: Tensor, coef: Tensor) -> Tensor:
        """Training-mode ProtoNorm of x with prototype coefficients ``coef`` (3, N) on x's device."""
        if is_distributed():  # statistics of every rank's RoIs; coef holds this rank's columns
            factor = self._momentum_factor()
            return sync_weighted_norm(
                x, self.weight, self.bias, coef[0], self.eps, self.running_mean, self.running_var, factor
            )
        m = x.numel() // x.shape[1]  # elements averaged per channel
        if m < 2:
            raise ValueError(
                f"{type(self).__name__}: expected more than 1 value per channel when training, got {tuple(x.shape)}"
            )
        fn = _ProtoNorm1dFunction if x.dim() == 2 else _ProtoNorm2dFunction
        factor = self._momentum_factor()
        return fn.apply(x, self.weight, self.bias, coef, self.eps, self.running_mean, self.running_var, factor)

    def _momentum_factor(self) -> float:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as BatchNorm
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum


class ProtoNorm1d(_ProtoNorm):
    """ProtoNorm over (N, C) embeddings; state dict as BatchNorm1d (no affine by default, like the release)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False, **kw):
        super().__init__(num_features, eps, momentum, affine, **kw)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(f"ProtoNorm1d: expected a 2-d input (N, C), got {tuple(x.shape)}")


class ProtoNorm2d(_ProtoNorm):
    """ProtoNorm over (N, C, H, W) RoI feature maps (OIMNet+++ res5 head); state dict as BatchNorm2d."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"ProtoNorm2d: expected a 4-d input (N, C, H, W), got {tuple(x.shape)}")


def set_protonorm_labels(module: nn.Module, labels: Tensor | None) -> None:
    """Give every ProtoNorm inside ``module`` the RoI labels (N,) of the next forward (None clears them).

    Needed where a ProtoNorm is called with one argument (res5 Bottleneck
    blocks).  The prototype weights are computed once per unlabeled id and shared.
    """
    weights: dict[int, Tensor] = {}
    for m in module.modules():
        if isinstance(m, _ProtoNorm):
            if labels is None:
                m.set_labels(None)
                continue
            if m.unlabeled_id not in weights:
                weights[m.unlabeled_id] = rank_prototype_coefficients(labels, m.unlabeled_id, torch.float64)
            m.set_labels(labels, weights[m.unlabeled_id])


def convert_bn2d_to_protonorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d in ``module`` (or ``module`` itself) by a ProtoNorm2d with the same state.

    Weight, bias, running statistics, num_batches_tracked, eps, momentum,
    device, dtype and train/eval mode are kept.  Returns the (possibly new) module.
    """
    if isinstance(module, nn.BatchNorm2d):
        return _protonorm_from_bn(module)
    for name, child in module.named_children():
        new = convert_bn2d_to_protonorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _protonorm_from_bn(bn: nn.BatchNorm2d) -> ProtoNorm2d:
    if not bn.track_running_stats:
        raise ValueError(f"convert_bn2d_to_protonorm: {bn} has no running statistics to carry over")
    ref = bn.running_mean
    pn = ProtoNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        pn.load_state_dict(bn.state_dict())
    if bn.affine:
        pn.weight.requires_grad_(bn.weight.requires_grad)
        pn.bias.requires_grad_(bn.bias.requires_grad)
    pn.train(bn.training)
    return pn
