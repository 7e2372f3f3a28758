"""OIM and LOIM re-id losses (online instance matching with a LUT and a circular queue).

Labels of the sampled RoIs: 0 background, 1..num_pids labeled identity, any
larger value (5555 in the data) unlabeled person.  Only labeled RoIs carry
loss terms; labeled and unlabeled RoIs both update the memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oimnet.constants import LOSS_TYPES
from oimnet.distributed import all_gather_rows, gather_counts, get_rank, get_world_size, is_distributed
from oimnet.losses.memory import push_queue_, round_plan, run_plain_rounds_, run_rounds_

__all__ = ["OIMLoss", "LOSS_TYPES", "packed_to_host"]

LOIM_MIN_WEIGHT = 0.7  # lower clamp of the IoU used as LOIM update weight


def packed_to_host(labels: Tensor, head: Tensor, ious: Tensor | None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Labels (N,) as int64, the 0-d queue head as an int and the IoUs (N,) as float64 on the host, in one copy.

    What a GPU step does (one device-to-host sync instead of three): the parts
    are packed into one float64 tensor on the labels' device, which holds
    labels and head exactly (integers below 2^53) and any IoU dtype.
    """
    parts = [labels.double(), head.view(1).to(labels.device, torch.float64)]
    if ious is not None:
        parts.append(ious.to(labels.device, torch.float64))
    host = torch.cat(parts).cpu().numpy()
    n = labels.shape[0]
    return host[:n].astype(np.int64), int(host[n]), host[n + 1 :] if ious is not None else None


class OIMLoss(nn.Module):
    """Cross-entropy of scaled cosine logits against a LUT (L x C) and a queue (Q x C), then the memory update.

    Buffers (state-dict names as in the release: ``roi_heads.reid_loss.lut``/``.cq``):
        lut: (num_pids, num_features), starts at zero.
        cq: (num_cq_size, num_features), starts at zero.
        cq_head: 0-d int64, next queue slot (ours; absent from release files,
            which then load with head 0).
    ``lut``/``cq`` are float32 unless ``memory_dtype`` says otherwise (the
    release used float16 under AMP); ``.half()`` also converts them.  Math is
    done in float32 (float64 for float64 inputs) and written back in the
    buffer dtype.

    The memory is updated inside ``forward`` when the module is in training
    mode, after the logits are computed, from the detached inputs; in eval
    mode ``forward`` only computes the loss.

    In training under a multi-rank process group every rank applies the
    update of all ranks' RoIs (gathered in rank order), so the buffers stay
    identical on every rank: DDP must not broadcast them
    (``broadcast_buffers=False``); see ``_forward_synchronised``.
    ``update_memory`` stays local (it applies exactly the rows it is given).
    """

    def __init__(
        self,
        num_features: int = 256,
        num_pids: int = 5532,
        num_cq_size: int = 5000,
        oim_momentum: float = 0.5,
        oim_scalar: float = 30.0,
        loss_type: str = "OIM",
        eps: float = 0.1,
        memory_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        # Sizes, OIM_MOMENTUM and OIM_EPS come from a config checked by
        # oimnet.config.validate (the one validator); only the loss type, which
        # picks the code path, is checked here.
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"MODEL.LOSS.TYPE {loss_type!r}: expected one of {LOSS_TYPES}")
        self.num_features = num_features
        self.num_pids = num_pids
        self.num_cq_size = num_cq_size
        self.momentum = float(oim_momentum)
        self.oim_scalar = float(oim_scalar)
        self.loss_type = loss_type
        self.eps = float(eps)
        self.register_buffer("lut", torch.zeros(num_pids, num_features, dtype=memory_dtype))
        self.register_buffer("cq", torch.zeros(num_cq_size, num_features, dtype=memory_dtype))
        self.register_buffer("cq_head", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return (
            f"{self.loss_type}, num_features={self.num_features}, num_pids={self.num_pids}, "
            f"num_cq_size={self.num_cq_size}, momentum={self.momentum}, scalar={self.oim_scalar}, eps={self.eps}"
        )

    def forward(self, inputs: Tensor, labels: Tensor, ious: Tensor | None = None) -> Tensor:
        """Re-id loss of one batch of RoIs.

        Args:
            inputs: (N, C) embeddings (unit rows from the embedding head).
            labels: (N,) int64, 0 background, 1..num_pids labeled, larger unlabeled.
            ious: (N,) IoU of each RoI with its matched GT box; required for LOIM.
        Returns:
            0-d loss: mean cross-entropy over the labeled RoIs, 0 (still
            attached to ``inputs``) when there are none.
        """
        self._check_inputs(inputs, labels, ious)
        if self.training and is_distributed():
            return self._forward_synchronised(inputs, labels, ious)
        host_labels, head, host_ious = self._to_host(
            labels, ious if self.training else None
        )  # the one host sync of a step
        labeled = np.flatnonzero((host_labels > 0) & (host_labels <= self.num_pids))
        loss = self._loss_sum(inputs, labels, labeled) / max(labeled.size, 1)
        if self.training:
            with torch.no_grad():
                self._update(inputs.detach(), host_labels, head, host_ious)
        return loss

    def _loss_sum(self, inputs: Tensor, labels: Tensor, labeled: np.ndarray) -> Tensor:
        """Sum of the cross-entropy terms of the RoIs ``labeled`` (host indices) against the current memory."""
        labeled_idx = torch.from_numpy(labeled).to(inputs.device)
        dtype = torch.promote_types(inputs.dtype, torch.float32)
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            x = inputs.index_select(0, labeled_idx).to(dtype)
            # torch.cat copies, so autograd keeps the pre-update memory.
            memory = torch.cat([self.lut, self.cq]).to(dtype)
            logits = self.oim_scalar * (x @ memory.t())
            # Sum, divided by the caller: an empty batch gives 0, not NaN.
            return F.cross_entropy(logits, labels.long().index_select(0, labeled_idx) - 1, reduction="sum")

    def _forward_synchronised(self, inputs: Tensor, labels: Tensor, ious: Tensor | None) -> Tensor:
        """Training step of one rank of a process group: the loss of its RoIs, the memory update of all ranks'.

        Features, labels (and LOIM IoUs) of every rank are gathered in rank
        order without gradient and every rank applies the update of the
        concatenated batch, so the ranks' memories stay identical and equal to
        the one process that saw that batch; the queue head advances by the
        global count of unlabeled RoIs.  The loss is this rank's sum of terms
        times the world size over the global count of labeled RoIs: the mean
        of the ranks' losses (what DDP's gradient average differentiates) is
        the one-process loss of the concatenated batch.
        """
        n = inputs.shape[0]
        counts = gather_counts(n, inputs.device)
        columns = [labels.to(torch.float64)]  # float64 holds labels (< 2^53) and IoUs exactly
        if self.loss_type == "LOIM":
            columns.append(ious.detach().to(labels.device, torch.float64))
        every_meta, _ = all_gather_rows(torch.stack(columns, 1), counts)
        every_x, _ = all_gather_rows(inputs, counts)
        host = every_meta.cpu().numpy()
        every_labels = host[:, 0].astype(np.int64)
        every_ious = host[:, 1] if self.loss_type == "LOIM" else None
        start = sum(counts[: get_rank()])
        mine = every_labels[start : start + n]
        labeled = np.flatnonzero((mine > 0) & (mine <= self.num_pids))
        n_labeled = int(np.count_nonzero((every_labels > 0) & (every_labels <= self.num_pids)))
        loss = self._loss_sum(inputs, labels, labeled) * (get_world_size() / max(n_labeled, 1))
        with torch.no_grad():
            self._update(every_x, every_labels, int(self.cq_head), every_ious)
        return loss

    @torch.no_grad()
    def update_memory(self, inputs: Tensor, labels: Tensor, ious: Tensor | None = None) -> None:
        """Apply the per-RoI memory updates of one batch, in RoI order (vectorized).

        Labeled x with id y: OIM ``lut[y-1] <- m*lut[y-1] + (1-m)*x``; LOIM
        with s = clamp(iou, 0.7, 1-eps): ``lut[y-1] <- (1-s)*lut[y-1] + s*x``;
        then the row is renormalized.  Unlabeled x: written at the queue head.
        """
        self._check_inputs(inputs, labels, ious)
        if labels.shape[0]:
            self._update(inputs, *self._to_host(labels, ious))

    def _to_host(self, labels: Tensor, ious: Tensor | None = None) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Labels (N,) int64, the queue head and, for LOIM, the IoUs (N,) on the host, in one transfer (none on CPU)."""
        want_ious = self.loss_type == "LOIM" and ious is not None
        if (
            labels.device.type == "cpu"
            and self.cq_head.device.type == "cpu"
            and (not want_ious or ious.device.type == "cpu")
        ):
            host_ious = None
            if want_ious:  # NumPy has no bfloat16
                host_ious = (
                    ious.detach().numpy()
                    if ious.dtype in (torch.float32, torch.float64)
                    else ious.detach().double().numpy()
                )
            return (
                labels.numpy() if labels.dtype == torch.int64 else labels.long().numpy(),
                int(self.cq_head),
                host_ious,
            )
        return packed_to_host(labels, self.cq_head, ious.detach() if want_ious else None)

    def _update(self, inputs: Tensor, host_labels: np.ndarray, head: int, ious: np.ndarray | None) -> None:
        """The memory update from the labels (and LOIM IoUs) on the host (call under no_grad)."""
        num_pids = self.num_pids
        labeled = ((host_labels > 0) & (host_labels <= num_pids)).nonzero()[0]
        unlabeled = (host_labels > num_pids).nonzero()[0] if self.num_cq_size else labeled[:0]
        if self.loss_type == "OIM":
            keep, new = self.momentum, 1.0 - self.momentum
            max_ratio = new / keep if keep > 0 else math.inf
        else:
            max_ratio = (1.0 - self.eps) / self.eps if self.eps > 0 else math.inf
        device = inputs.device
        if labeled.size:
            plain = not math.isfinite(max_ratio)  # some keep may be 0: plain normalized steps
            if plain:
                ratio = 1.0  # round_plan then only marks the padding (coef 0)
            elif self.loss_type == "OIM":
                ratio = new / keep
            else:
                s = ious[labeled].astype(np.float64).clip(LOIM_MIN_WEIGHT, 1.0 - self.eps)
                ratio = s / (1.0 - s)
            lut = self.lut
            wide = lut.dtype == torch.float64 or inputs.dtype == torch.float64  # else computed in float32
            rows, pick, coef = round_plan(host_labels[labeled] - 1, labeled, ratio, np.float64 if wide else np.float32)
            g, p = rows.shape[0], pick.shape[0]
            # One host-to-device copy for every index of the update, one for the ratios.
            idx = torch.from_numpy(np.concatenate((rows, pick, unlabeled))).to(device)
            rows_t, pick_t, unlabeled_t = idx[:g], idx[g : g + p], idx[g + p :]
            if plain:
                if self.loss_type == "LOIM":
                    # np.clip copies: the host IoUs may share memory with the caller's tensor.
                    new = torch.from_numpy(np.clip(ious, LOIM_MIN_WEIGHT, 1.0 - self.eps).astype(np.float32)).to(device)
                    keep = 1.0 - new
                run_plain_rounds_(lut, rows_t, inputs, pick_t, torch.from_numpy(coef > 0).to(device), keep, new)
            else:
                run_rounds_(lut, rows_t, inputs, pick_t, torch.from_numpy(coef).to(device), max_ratio)
        elif unlabeled.size:
            unlabeled_t = torch.from_numpy(unlabeled).to(device)
        if unlabeled.size:
            push_queue_(self.cq, self.cq_head, inputs, unlabeled_t, start=head)

    def _check_inputs(self, inputs: Tensor, labels: Tensor, ious: Tensor | None) -> None:
        if inputs.dim() != 2 or inputs.shape[1] != self.num_features:
            raise ValueError(f"OIMLoss inputs {tuple(inputs.shape)}: expected (N, {self.num_features})")
        if labels.shape != (inputs.shape[0],) or labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"OIMLoss labels {tuple(labels.shape)} {labels.dtype}: expected ({inputs.shape[0]},) int64 (0 background, 1..{self.num_pids} labeled, larger unlabeled)"
            )
        if self.loss_type == "LOIM":
            if ious is None:
                raise ValueError("OIMLoss(loss_type='LOIM') needs ious, the (N,) IoU of each RoI with its GT box")
            if ious.shape != (inputs.shape[0],):
                raise ValueError(f"OIMLoss ious {tuple(ious.shape)}: expected ({inputs.shape[0]},)")

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Release checkpoints have no queue head (their queue restarts at 0) and
        # keep lut/cq in float16: cast to our buffer dtype so assign=True keeps it too.
        head_key = prefix + "cq_head"
        if head_key not in state_dict:
            state_dict[head_key] = torch.zeros((), dtype=torch.int64)
        for name in ("lut", "cq"):
            key = prefix + name
            value = state_dict.get(key)
            if isinstance(value, Tensor) and value.is_floating_point():
                state_dict[key] = value.to(getattr(self, name).dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
