"""Multi-process training helpers (torch.distributed): ranks, gathers, cross-rank checks.

Without an initialised process group everything here acts as one process
of rank 0, so the single-process path calls it unconditionally.
"""

from oimnet.distributed.comm import (
    all_gather_rows,
    all_reduce_max,
    all_reduce_sum,
    assert_same_across_ranks,
    broadcast_int,
    collective_device,
    gather_counts,
    gather_rows_to_main,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    tensor_digest,
)

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
