"""Vectorized OIM / LOIM memory updates (lookup table and circular queue).

The authors' release updates the memory one RoI at a time, in RoI order.
These functions give the same result without a Python loop over RoIs.

LUT.  For one identity updated K times in a batch the sequential rule is
``v_k = normalize(a_k v_{k-1} + b_k x_k)``.  Unrolled,
``v_K ~ (prod_k a_k) v_0 + sum_k b_k (prod_{j>k} a_j) t_{k-1} x_k`` with
``t_k = ||a_k v_{k-1} + b_k x_k|| t_{k-1}``: the cumulative products are
closed-form, but the norms t_k depend on every earlier step, so one weighted
sum normalized once at the end is a different vector.  The update therefore
runs rank by rank: step r applies the r-th update of *every* identity at
once; the loop runs max-multiplicity times (about 10-30 for 640 RoIs),
never once per RoI.  With w = v / prod a (rescaled, not normalized) the
first step is ``w <- v + (b_1 / a_1) x_1`` and every later one
``w <- w + (b_k / a_k) ||w|| x_k`` (two ops); the direction of w equals the
oracle's v_k, w is normalized once at the end and, in long chains, every
few steps so that it cannot overflow.

Queue.  Unlabeled RoI number i (0-based, RoI order) goes to slot
``(head + i) mod Q``; when more than Q arrive only the last Q are written
(last write wins), so the written slots are distinct: at most two
contiguous runs.

One device-to-host transfer per call (labels, queue head and, for LOIM, the
IoUs), none per RoI; the plan goes back in two host-to-device copies
(indices, ratios).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["update_lut_", "round_plan", "run_rounds_", "run_plain_rounds_", "push_queue_"]

# Growth allowed between renormalizations of the rescaled rows (float16 is
# never used for the computation, so 2^60 is far from overflow).
_MAX_GROWTH_LOG2 = 60.0
_NORM_EPS = 1e-12  # norm floor, as F.normalize


def update_lut_(lut: Tensor, rows: Tensor, x: Tensor, keep: Tensor | float, new: Tensor | float) -> None:
    """In place: ``lut[rows[k]] <- normalize(keep[k] * lut[rows[k]] + new[k] * x[k])`` for k in order.

    Args:
        lut: (L, C) memory, any floating dtype; computed in float32 (float64
            if ``lut`` or ``x`` is float64) and written back in ``lut.dtype``.
        rows: (K,) int64 row of each update, 0-based; repeats compound in order.
        x: (K, C) features.
        keep: (K,) weight of the old row (OIM: momentum m; LOIM: 1 - s), or one float.
        new: (K,) weight of the new feature (OIM: 1 - m; LOIM: s), or one float.
    """
    k = rows.numel()
    if k == 0:
        return
    for name, w in (("keep", keep), ("new", new)):
        if isinstance(w, Tensor) and w.shape != (k,):
            raise ValueError(f"update_lut_: {name} {tuple(w.shape)}: expected ({k},) or a float")
    if x.shape != (k, lut.shape[1]):
        raise ValueError(
            f"update_lut_: x {tuple(x.shape)}: expected ({k}, {lut.shape[1]}) for rows {tuple(rows.shape)}"
        )
    host_rows = rows.cpu().numpy()  # host reads: rows, keep, new (not per RoI)
    keep_h = keep.detach().cpu().double().numpy() if isinstance(keep, Tensor) else float(keep)
    new_h = new.detach().cpu().double().numpy() if isinstance(new, Tensor) else float(new)
    max_ratio = _max_ratio(keep_h, new_h)
    # The rescaled rounds cannot leave a zero row once it is zero, so an update
    # with new = 0 (a zero row stays zero, later updates must still move it)
    # takes the plain normalized steps too, as does keep = 0.
    plain = not math.isfinite(max_ratio) or np.min(new_h) <= 0
    # The plain steps only need the padding marked (ratio 1 -> coef 0 at the padding).
    uniq, pick, coef = round_plan(
        host_rows.astype(np.int64, copy=False), np.arange(k), 1.0 if plain else new_h / keep_h
    )
    device = lut.device
    uniq_t, pick_t = torch.from_numpy(uniq).to(device), torch.from_numpy(pick).to(device)
    if plain:
        run_plain_rounds_(lut, uniq_t, x, pick_t, torch.from_numpy(coef > 0).to(device), keep, new)
        return
    dtype = torch.float64 if torch.float64 in (lut.dtype, x.dtype) else torch.float32
    run_rounds_(lut, uniq_t, x, pick_t, torch.from_numpy(coef).to(device, dtype), max_ratio)


def _max_ratio(keep: np.ndarray | float, new: np.ndarray | float) -> float:
    """Upper bound of new / keep over the updates (host values; inf if some keep is 0)."""
    keep_min, new_max = float(np.min(keep)), float(np.max(new))
    return math.inf if keep_min <= 0 else max(new_max, 0.0) / keep_min


def run_plain_rounds_(
    lut: Tensor,
    rows: Tensor,
    x: Tensor,
    pick: Tensor,
    active: Tensor,
    keep: Tensor | float,
    new: Tensor | float,
) -> None:
    """Run a :func:`round_plan` with plain normalized steps (for updates where keep may be 0).

    ``v <- normalize(keep * v + new * x)`` for every row at once, round by
    round; ``pick`` (depth * G,) indexes the rows of ``x`` (N, C) and of
    per-feature ``keep``/``new`` (N,) tensors (or they are one float each);
    ``active`` (depth * G,) bool is False at the padding, which leaves a row
    as it is (keep 1, new 0).  Three ops a round instead of two, and no
    1 / keep: the rescaled rounds of :func:`run_rounds_` need keep > 0.
    """
    n_rows = rows.shape[0]
    size = pick.shape[0]
    dtype = torch.float64 if torch.float64 in (lut.dtype, x.dtype) else torch.float32
    x_sel = x.index_select(0, pick).to(dtype)
    keep_c = keep.index_select(0, pick).to(dtype) if isinstance(keep, Tensor) else x_sel.new_full((size,), keep)
    new_c = new.index_select(0, pick).to(dtype) if isinstance(new, Tensor) else x_sel.new_full((size,), new)
    padding = ~active
    keep_c = keep_c.masked_fill(padding, 1.0)[:, None]
    new_c = new_c.masked_fill(padding, 0.0)[:, None]
    state = lut.index_select(0, rows).to(dtype)
    for r in range(size // n_rows):
        step = slice(r * n_rows, (r + 1) * n_rows)
        state = state * keep_c[step] + x_sel[step] * new_c[step]
        _normalize_rows_(state)
    lut.index_copy_(0, rows, state.to(lut.dtype))


def round_plan(
    rows: np.ndarray, src: np.ndarray, ratio: np.ndarray | float, dtype=np.float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan the round-by-round update of a sequence of LUT row updates (host side).

    Args:
        rows: (K,) row of each update, in update order.
        src: (K,) int64 index of each update's feature (a row of ``x``).
        ratio: (K,) or one float, new / keep of each update.
        dtype: NumPy float type of ``coef``.
    Returns:
        uniq: (G,) distinct rows, ascending.
        pick: (depth * G,) round-major: at r * G + j the ``src`` of the r-th
            update of ``uniq[j]``; where ``uniq[j]`` has fewer than r + 1
            updates (padding), the ``src`` of its first update (times 0: a
            non-finite feature then spoils only its own row, as in the oracle).
        coef: (depth * G,) ``dtype``, the ratio of that update, 0 at the padding
            (so a padded step adds nothing).
    One stable argsort; occurrence ranks from the group starts.
    """
    k = rows.shape[0]
    order = rows.argsort(kind="stable")  # grouped by row, update order kept inside a group
    grouped = rows[order]
    starts = np.empty(k, dtype=bool)
    starts[0] = True
    np.not_equal(grouped[1:], grouped[:-1], out=starts[1:])
    first = starts.nonzero()[0]
    g = first.shape[0]
    group = starts.cumsum() - 1  # group of each grouped update
    rank = np.arange(k) - first[group]  # its occurrence number inside the group
    size = g * (int(rank.max()) + 1)
    dest = rank * g + group
    src_sorted = src[order]
    if size == k:  # no padding
        pick, coef = np.empty(k, dtype=np.int64), np.empty(k, dtype=dtype)
    else:
        pick, coef = np.empty(size, dtype=np.int64), np.zeros(size, dtype=dtype)
        pick.reshape(-1, g)[:] = src_sorted[first]  # every round: each row's first feature
    pick[dest] = src_sorted
    coef[dest] = ratio[order] if isinstance(ratio, np.ndarray) else ratio
    return grouped[first], pick, coef


def run_rounds_(lut: Tensor, rows: Tensor, x: Tensor, pick: Tensor, coef: Tensor, max_ratio: float) -> None:
    """Run a :func:`round_plan` (device side): ``lut[rows]`` (G rows) updated in ``len(pick) // G`` rounds.

    Update j (round-major, ``pick[j]`` its row of ``x``) is
    ``v <- normalize(keep * v + new * x) = normalize(v + coef[j] * x)``, with
    ``coef = new / keep`` finite, at most ``max_ratio``, and 0 at padding.
    The computation runs in ``coef.dtype`` (float32, or float64 for float64
    memory or features) and is written back in ``lut.dtype``.
    """
    n_rows = rows.shape[0]
    depth = pick.shape[0] // n_rows
    dtype = coef.dtype
    x_sel = x.index_select(0, pick)
    if x_sel.dtype != dtype:
        x_sel = x_sel.to(dtype)
    x_sel.mul_(coef[:, None])
    state = lut.index_select(0, rows)
    if state.dtype != dtype:
        state = state.to(dtype)
    # Rescaled rows w, direction = the oracle's row: w_1 = v + ratio * x is
    # normalize(v + ratio * x) up to scale for any v (zero rows too); after
    # that w <- w + ratio * ||w|| * x keeps the direction of
    # normalize(w / ||w|| + ratio * x).  One normalization at the end.
    if depth == 1:
        state.add_(x_sel)
    else:
        chunks = x_sel.view(depth, n_rows, -1).unbind(0)
        state.add_(chunks[0])
        # ||w|| grows by at most (1 + max_ratio) per round: renormalize before 2^60.
        every = _renorm_period(max_ratio, depth)
        norm = state.new_empty(n_rows, 1)
        vector_norm, addcmul_ = torch.linalg.vector_norm, state.addcmul_
        for r in range(1, depth):
            vector_norm(state, 2, 1, True, out=norm)
            if r % every:
                addcmul_(norm, chunks[r])
            else:  # renormalize, then step: w / ||w|| + ratio * x, same direction
                state.div_(norm.clamp_min_(_NORM_EPS)).add_(chunks[r])
    _normalize_rows_(state)
    lut.index_copy_(0, rows, state if state.dtype == lut.dtype else state.to(lut.dtype))


def _renorm_period(max_ratio: float, depth: int) -> int:
    """Rounds between renormalizations so that ||w|| (growing at most (1 + max_ratio) per round) stays below 2^60."""
    if max_ratio <= 0:  # nothing is ever added: no growth
        return depth
    return max(1, int(_MAX_GROWTH_LOG2 / math.log2(1.0 + max_ratio)))


def _normalize_rows_(state: Tensor) -> None:
    state.div_(torch.linalg.vector_norm(state, dim=1, keepdim=True).clamp_min_(_NORM_EPS))


def push_queue_(cq: Tensor, head: Tensor, x: Tensor, index: Tensor | None = None, start: int | None = None) -> None:
    """In place: write the rows ``x`` (U, C), or ``x[index]``, into the circular queue ``cq`` (Q, C) at ``head``.

    Equivalent to ``for v in rows: cq[head] = v; head = (head + 1) % Q``.
    ``head`` is a 0-d int64 tensor updated in place; ``start`` is its value
    when the caller already has it on the host (else it is read: a sync on GPU).
    """
    n = x.shape[0] if index is None else index.shape[0]
    q = cq.shape[0]
    if n == 0 or q == 0:
        return
    if x.shape[1] != cq.shape[1]:
        raise ValueError(f"push_queue_: x has {x.shape[1]} features, queue rows have {cq.shape[1]}")
    if index is None:
        index = torch.arange(n, device=x.device)
    written = min(n, q)  # with more than Q rows, earlier ones are overwritten anyway
    first = (int(head) if start is None else start) + n - written  # slot of the first written row (unwrapped)
    begin = first % q
    run = min(written, q - begin)  # the rest wraps to slot 0
    src = index if written == n else index[n - written :]
    if x.dtype == cq.dtype:
        if run == written:
            torch.index_select(x, 0, src, out=cq[begin : begin + run])
        else:
            torch.index_select(x, 0, src[:run], out=cq[begin:])
            torch.index_select(x, 0, src[run:], out=cq[: written - run])
    else:
        rows = x.index_select(0, src).to(cq.dtype)
        cq[begin : begin + run] = rows[:run]
        cq[: written - run] = rows[run:]
    head.fill_((first + written) % q)
