"""Vectorized OIM / LOIM memory updates (lookup table and circular queue).

The authors' release updates the memory one RoI at a time, in RoI order.
These functions give the same result without a Python loop over RoIs:

* LUT: for one identity seen K times in a batch the sequential update is
  ``v_k = normalize(a_k * v_{k-1} + b_k * x_k)``.  Because normalization
  rescales the *whole* running vector, the weight x_k receives relative to
  the history depends on the norms of all earlier steps, so the chain cannot
  be collapsed into one weighted sum without those norms.  The update is
  therefore run rank by rank: step r applies the r-th occurrence of *every*
  identity at once.  The loop runs max-multiplicity times (typically
  10-30 for 640 RoIs), never once per RoI, and needs one host sync.
* Queue: unlabeled RoI number i (0-based, RoI order) goes to slot
  ``(head + i) mod Q``; when more than Q arrive only the last Q are written
  (last write wins), so every write lands in a distinct slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["update_lut_", "push_queue_"]

_NORM_EPS = 1e-12  # floor on a row norm before dividing (as F.normalize)


def update_lut_(lut: Tensor, rows: Tensor, x: Tensor, keep: Tensor, new: Tensor) -> None:
    """In place: ``lut[rows[k]] <- normalize(keep[k] * lut[rows[k]] + new[k] * x[k])`` for k in order.

    Args:
        lut: (L, C) memory, any floating dtype; computed in float32 (float64
            if ``lut`` or ``x`` is float64) and written back in ``lut.dtype``.
        rows: (K,) int64 row of each update, 0-based; repeats compound in order.
        x: (K, C) features.
        keep: (K,) weight of the old row (OIM: momentum m; LOIM: 1 - s).
        new: (K,) weight of the new feature (OIM: 1 - m; LOIM: s).
    """
    k = rows.numel()
    if k == 0:
        return
    if x.shape != (k, lut.shape[1]) or keep.shape != (k,) or new.shape != (k,):
        raise ValueError(
            f"update_lut_: rows {tuple(rows.shape)}, x {tuple(x.shape)}, keep {tuple(keep.shape)}, "
            f"new {tuple(new.shape)}: expected (K,), (K, {lut.shape[1]}), (K,), (K,)"
        )
    dtype = torch.float64 if torch.float64 in (lut.dtype, x.dtype) else torch.float32
    # Group the updates by row, keeping RoI order inside a group (stable sort).
    order = torch.argsort(rows, stable=True)
    sorted_rows = rows[order]
    uniq, group, counts = torch.unique_consecutive(sorted_rows, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(k, device=rows.device) - starts[group]
    depth = int(counts.max())  # the one host sync of the update

    n_groups = uniq.numel()
    # Padded schedule: step r holds the r-th occurrence of each group.  Padding
    # (keep=1, new=0) only renormalizes an already unit row: a no-op up to rounding.
    keep_pad = torch.ones(depth, n_groups, 1, dtype=dtype, device=lut.device)
    new_x = torch.zeros(depth, n_groups, lut.shape[1], dtype=dtype, device=lut.device)
    keep_pad[rank, group, 0] = keep[order].to(dtype)
    new_x[rank, group] = new[order].to(dtype)[:, None] * x[order].to(dtype)

    state = lut.index_select(0, uniq).to(dtype)
    for r in range(depth):
        state = torch.addcmul(new_x[r], keep_pad[r], state)
        state = state / torch.linalg.vector_norm(state, dim=1, keepdim=True).clamp_min(_NORM_EPS)
    lut.index_copy_(0, uniq, state.to(lut.dtype))


def push_queue_(cq: Tensor, head: Tensor, x: Tensor) -> None:
    """In place: write the rows of ``x`` (U, C) into the circular queue ``cq`` (Q, C) at ``head``.

    Equivalent to ``for v in x: cq[head] = v; head = (head + 1) % Q``; ``head``
    is a 0-d int64 tensor updated in place (stays on its device, no sync).
    """
    n, q = x.shape[0], cq.shape[0]
    if n == 0 or q == 0:
        return
    if x.shape[1] != cq.shape[1]:
        raise ValueError(f"push_queue_: x has {x.shape[1]} features, queue rows have {cq.shape[1]}")
    written = min(n, q)  # with more than Q rows, earlier ones are overwritten anyway
    skipped = n - written
    slots = (head + skipped + torch.arange(written, device=cq.device)) % q
    cq.index_copy_(0, slots, x[skipped:].to(cq.dtype))
    head.copy_((head + n) % q)
