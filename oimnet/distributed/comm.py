"""Process-group helpers: rank, world size, gathers of variable-length rows, cross-rank digests.

Every function is a no-op (rank 0 of a world of 1) when torch.distributed
has no initialised default process group, so single-process code calls them
unconditionally.  All collectives go through the default group; every rank
must make the same calls in the same order (as with any collective).
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "collective_device",
    "gather_counts",
    "all_gather_rows",
    "gather_rows_to_main",
    "all_reduce_sum",
    "all_reduce_max",
    "broadcast_int",
    "tensor_digest",
    "assert_same_across_ranks",
]


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of ranks of the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the one that writes checkpoints, tracking and reports."""
    return get_rank() == 0


def collective_device() -> torch.device:
    """Where the default group's collectives take tensors: this rank's GPU for NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def gather_counts(n: int, device: torch.device | str | None = None) -> list[int]:
    """Every rank's row count, in rank order ([n] without a process group).

    ``device`` holds the one-element exchange tensor (default
    :func:`collective_device`).
    """
    if not is_distributed():
        return [int(n)]
    mine = torch.tensor([int(n)], dtype=torch.int64, device=device or collective_device())
    counts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, mine)
    return [int(c) for c in torch.cat(counts).tolist()]


@torch.no_grad()
def all_gather_rows(x: Tensor, counts: list[int] | None = None) -> tuple[Tensor, list[int]]:
    """Concatenate the rows of ``x`` (n_r, ...) of every rank, in rank order; no gradient.

    Ranks may hold different row counts: each pads to the largest count,
    the padded blocks are all-gathered and trimmed.  ``counts`` (from
    :func:`gather_counts`) skips the count exchange when the caller already
    has them.  Every rank must pass the same dtype, trailing shape and device
    type.  Returns (sum(n_r), ...) rows and the counts; without a process
    group, ``x`` itself (detached) and [n].
    """
    x = x.detach()
    if not is_distributed():
        return x, [x.shape[0]]
    if counts is None:
        counts = gather_counts(x.shape[0], x.device)
    rank = dist.get_rank()
    if counts[rank] != x.shape[0]:
        raise ValueError(f"all_gather_rows: counts[{rank}] = {counts[rank]} but this rank has {x.shape[0]} rows")
    longest = max(counts)
    if longest == 0:
        return x, counts
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    blocks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(blocks, padded.contiguous())
    return torch.cat([block[:n] for block, n in zip(blocks, counts)]), counts


@torch.no_grad()
def gather_rows_to_main(x: Tensor) -> Tensor | None:
    """Rank 0: the rows of ``x`` (n_r, ...) of every rank concatenated in rank order; other ranks: None. No gradient.

    Like :func:`all_gather_rows` (ranks may hold different row counts; same
    dtype, trailing shape and device type), but only rank 0 receives the
    rows (one ``gather``), so the others hold no copy. Without a process
    group, ``x`` itself (detached).
    """
    x = x.detach()
    if not is_distributed():
        return x
    counts = gather_counts(x.shape[0], x.device)
    longest = max(counts)
    if longest == 0:
        return x if dist.get_rank() == 0 else None
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    if dist.get_rank() != 0:
        dist.gather(padded, dst=0)
        return None
    blocks = [torch.empty_like(padded) for _ in counts]
    dist.gather(padded, gather_list=blocks, dst=0)
    return torch.cat([block[:n] for block, n in zip(blocks, counts)])


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=collective_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def all_reduce_sum(x: Tensor) -> Tensor:
    """In place sum of ``x`` over the ranks (no-op without a process group); returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_max(x: Tensor) -> Tensor:
    """In place element-wise maximum of ``x`` over the ranks (no-op without a process group); returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def tensor_digest(tensors: list[Tensor]) -> bytes:
    """SHA-256 of the dtypes, shapes and bytes of ``tensors`` (bit-exact identity test)."""
    h = hashlib.sha256()
    for t in tensors:
        shape = t.shape
        t = t.detach().reshape(-1).contiguous().cpu()  # 1-d: view(uint8) needs a dim
        h.update(f"{t.dtype}{tuple(shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


@torch.no_grad()
def assert_same_across_ranks(tensors: list[Tensor], what: str) -> bytes:
    """Raise RuntimeError unless every rank holds bit-identical ``tensors``; returns the local digest.

    One all-gather of a 32-byte digest.  ``what`` names the state in the
    message (e.g. "OIM memory (lut, cq, cq_head)").
    """
    digest = tensor_digest(tensors)
    if not is_distributed():
        return digest
    mine = torch.tensor(list(digest), dtype=torch.uint8, device=collective_device())
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    digests = [bytes(d.cpu().tolist()) for d in every]
    if len(set(digests)) != 1:
        hexes = [d.hex()[:16] for d in digests]
        raise RuntimeError(
            f"{what} differs across ranks (SHA-256 prefixes by rank: {hexes}); the ranks' copies have drifted apart"
        )
    return digest
