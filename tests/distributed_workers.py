"""Run a function on N gloo CPU processes (torch.multiprocessing spawn) and collect what each returns.

Shared by the multi-process tests: the worker functions live here (a module
that the spawned children can import) and build their data from seeds, so
the parent can compute the one-process reference on the same batch.
"""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, out_dir: str, fn_name: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = globals()[fn_name](rank, world, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    except Exception:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn_name: str, world: int, out_dir: Path, *args) -> list[dict]:
    """Call ``fn_name(rank, world, *args)`` of this module on ``world`` gloo processes; their results in rank order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        mp.spawn(_entry, args=(world, free_port(), str(out_dir), fn_name, args), nprocs=world, join=True)
    except Exception as err:
        errors = "\n".join(p.read_text() for p in sorted(out_dir.glob("rank*.err")))
        raise RuntimeError(f"{fn_name} failed on a rank:\n{errors or err}") from err
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(world)]


# ----------------------------------------------------------------- phase-1 pieces
# A fixed batch, rows split over the ranks in rank order (uneven on purpose).

STEPS = 3
ROWS_PER_RANK = (7, 5)
IN_FEATURES, FEATURES = 12, 8
NUM_PIDS, CQ_SIZE = 6, 5
UNLABELED = 5555


def step_batch(step: int) -> dict[str, torch.Tensor]:
    """Rows of all ranks for one step: inputs (N, IN), labels (N,), ious (N,), feature maps (N, 3, 2, 2), grad weights."""
    g = torch.Generator().manual_seed(100 + step)
    n = sum(ROWS_PER_RANK)
    # Identities repeat within and across ranks; unlabeled and background on both.
    labels = torch.tensor([1, 2, 1, UNLABELED, 0, 3, UNLABELED, 2, UNLABELED, 0, 1, UNLABELED])
    labels = labels[torch.randperm(n, generator=g)]
    if step == 1:  # all foreground unlabeled on rank 1, more unlabeled than the queue holds overall
        labels[ROWS_PER_RANK[0] :] = torch.tensor([UNLABELED, 0, UNLABELED, UNLABELED, UNLABELED])
    return {
        "inputs": torch.randn(n, IN_FEATURES, generator=g, dtype=torch.float64).float(),
        "labels": labels,
        "ious": torch.rand(n, generator=g, dtype=torch.float64).float() * 0.5 + 0.5,
        "maps": torch.randn(n, 3, 2, 2, generator=g, dtype=torch.float64).float(),
        "probe": torch.randn(n, FEATURES, generator=g, dtype=torch.float64).float(),
        "probe2d": torch.randn(n, 3, 2, 2, generator=g, dtype=torch.float64).float(),
    }


def rows_of(rank: int | None) -> slice:
    if rank is None:
        return slice(0, sum(ROWS_PER_RANK))
    start = sum(ROWS_PER_RANK[:rank])
    return slice(start, start + ROWS_PER_RANK[rank])


def build_pieces(loss_type: str):
    """Seeded modules: projection -> OIM/LOIM loss; projection -> ProtoNorm1d; conv -> ProtoNorm2d; conv -> BatchNorm2d."""
    from oimnet.losses import OIMLoss
    from oimnet.models.protonorm import ProtoNorm1d, ProtoNorm2d

    torch.manual_seed(0)
    return {
        "proj": torch.nn.Linear(IN_FEATURES, FEATURES, bias=False),
        "loss": OIMLoss(FEATURES, NUM_PIDS, CQ_SIZE, loss_type=loss_type, oim_scalar=4.0),
        "pn_proj": torch.nn.Linear(IN_FEATURES, FEATURES),
        "pn1d": ProtoNorm1d(FEATURES),
        "conv": torch.nn.Conv2d(3, 3, 1),
        "pn2d": ProtoNorm2d(3),
        "bn_conv": torch.nn.Conv2d(3, 3, 1),
        "bn2d": torch.nn.BatchNorm2d(3),
    }


def run_pieces(rank: int | None, world: int, loss_type: str, sync_bn: bool) -> dict[str, torch.Tensor]:
    """STEPS training steps of the pieces on this rank's rows (``rank`` None: one process, all rows).

    Each rank's objective is scaled so that the mean over ranks is the
    one-process objective; gradients are then all-reduced and divided by the
    world size, as DDP does.  Returns losses, outputs, reduced gradients and
    buffers per step.
    """
    import torch.nn.functional as F

    from oimnet.distributed import all_reduce_sum, assert_same_across_ranks
    from oimnet.models.sync_norm import convert_sync_batchnorm

    pieces = build_pieces(loss_type)
    if sync_bn:
        pieces["bn2d"] = convert_sync_batchnorm(pieces["bn2d"])
    modules = torch.nn.ModuleDict(pieces).train()
    rows = rows_of(rank)
    n_all = sum(ROWS_PER_RANK)
    out: dict[str, torch.Tensor] = {}
    for step in range(STEPS):
        b = {k: v[rows] for k, v in step_batch(step).items()}
        modules.zero_grad()
        emb = F.normalize(pieces["proj"](b["inputs"]), dim=1)
        reid = pieces["loss"](emb, b["labels"], b["ious"])
        y1 = pieces["pn1d"](pieces["pn_proj"](b["inputs"]), b["labels"])
        pieces["pn2d"].set_labels(b["labels"])
        y2 = pieces["pn2d"](pieces["conv"](b["maps"]))
        pieces["pn2d"].set_labels(None)
        y3 = pieces["bn2d"](pieces["bn_conv"](b["maps"]))
        # Objectives summed over rows: scaled by world so the ranks' mean is the one-process sum / n_all.
        norm_terms = ((y1 * b["probe"]).sum() + (y2 * b["probe2d"]).sum() + (y3 * b["probe2d"]).sum()) * (world / n_all)
        (reid + norm_terms).backward()
        reid_mean = all_reduce_sum(reid.detach().clone()) / world
        for name, p in modules.named_parameters():
            if p.grad is not None:
                out[f"{step}/grad/{name}"] = all_reduce_sum(p.grad.clone()) / world
        out[f"{step}/loss"] = reid_mean
        out[f"{step}/y1"], out[f"{step}/y2"], out[f"{step}/y3"] = y1.detach(), y2.detach(), y3.detach()
        for name, buf in modules.named_buffers():
            out[f"{step}/buf/{name}"] = buf.clone()
        memory = [pieces["loss"].lut, pieces["loss"].cq, pieces["loss"].cq_head]
        assert_same_across_ranks(memory, "OIM memory")
        assert_same_across_ranks([pieces["pn2d"].running_mean, pieces["pn2d"].running_var], "ProtoNorm2d running stats")
    return out


def pieces_worker(rank: int, world: int, sync_bn: bool) -> dict[str, torch.Tensor]:
    """:func:`gather_worker`, then :func:`run_pieces` with the OIM and the LOIM loss (one spawn); keys prefixed."""
    out = {f"gather/{k}": v for k, v in gather_worker(rank, world).items()}
    out.update({f"{t}/{k}": v for t in ("OIM", "LOIM") for k, v in run_pieces(rank, world, t, sync_bn).items()})
    return out


def gather_worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    """all_gather_rows with uneven counts (one rank empty) and a digest check that must fail."""
    from oimnet.distributed import all_gather_rows, assert_same_across_ranks, get_rank, get_world_size

    n = 3 if rank == 0 else 0
    rows = torch.arange(n * 2, dtype=torch.float32).view(n, 2) + 10 * rank
    every, counts = all_gather_rows(rows)
    result = {
        "every": every,
        "counts": torch.tensor(counts),
        "rank": torch.tensor(get_rank()),
        "world": torch.tensor(get_world_size()),
    }
    try:
        assert_same_across_ranks([torch.tensor([float(rank)])], "probe")
        result["mismatch_raised"] = torch.tensor(False)
    except RuntimeError as err:
        result["mismatch_raised"] = torch.tensor("differs across ranks" in str(err))
    assert_same_across_ranks([torch.ones(3), torch.zeros((), dtype=torch.int64)], "same")
    return result
