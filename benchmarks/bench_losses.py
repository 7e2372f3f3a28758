"""Benchmarks of the re-id loss memory update and of ProtoNorm against their loop oracles.

oim_update / loim_update: memory update at paper size (5 images x 128 RoIs,
    about half foreground; per image two labeled identities and four
    unlabeled persons share the foreground RoIs; LUT 5532 x 256, queue
    5000 x 256), vectorized ``OIMLoss.update_memory`` vs the per-RoI loop.
protonorm1d: forward + backward on 640 x 256 embeddings (about half
    background, 30 % labeled from 20 ids, the rest unlabeled).
protonorm2d: forward + backward on a res5 head shape 640 x 512 x 7 x 7
    (quick: 160 x 512 x 7 x 7).
The ProtoNorm entries also report ``floor_s``, torch BatchNorm's forward +
backward at the same shape, and ``floor_ratio`` = fast_s / floor_s.
Times are the minimum over back-to-back repeats of each version (50 for the
memory updates, 100 / 5 for ProtoNorm 1-d / 2-d; warm
caches, as in a training step where the inputs were just computed), on CPU
with one intra-op thread (``threads`` in the result): on the shared 2-core
machine a second OpenMP thread that is not scheduled turns every parallel
op into a millisecond wait, which swamps what is measured.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from oimnet.losses import OIMLoss  # noqa: E402
from oimnet.models.protonorm import ProtoNorm1d, ProtoNorm2d  # noqa: E402
from tests.reference_losses import UNLABELED, reference_protonorm, sequential_memory_update  # noqa: E402

LUT_SIZE, CQ_SIZE, DIM = 5532, 5000, 256


def _one_thread(fn):
    """Run the benchmark with one intra-op thread, restoring the previous setting after."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


def _min_time(fns: dict, repeats: int) -> dict:
    """Minimum wall time (s) of each zero-argument callable over ``repeats`` back-to-back calls after one warm-up."""
    best = {}
    for k, fn in fns.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[k] = min(times)
    return best


def paper_batch(seed: int = 0, images: int = 5, rois: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings (N, 256) unit rows, labels (N,), IoUs (N,) of one training batch of sampled RoIs."""
    g = torch.Generator().manual_seed(seed)
    labels = []
    for _ in range(images):
        persons = torch.randint(1, LUT_SIZE + 1, (2,), generator=g).tolist() + [UNLABELED] * 4
        fg = torch.randint(0, len(persons), (rois // 2,), generator=g).tolist()
        labels += [persons[j] for j in fg] + [0] * (rois - rois // 2)
    labels = torch.tensor(labels)
    x = F.normalize(torch.randn(len(labels), DIM, generator=g), dim=1)
    ious = torch.rand(len(labels), generator=g) * 0.5 + 0.5
    return x, labels, ious


class MemoryUpdateCase(NamedTuple):
    """A fast OIM/LOIM memory at the paper's sizes, a copy of its start state and the paper batch.

    ``agree``/``err``: whether one fast update equals the sequential reference
    (max abs difference of LUT and queue, and the queue head).
    """

    fast: OIMLoss
    state: tuple  # (lut, cq, head) before the update, for the reference
    x: torch.Tensor  # (N, DIM) RoI features
    labels: torch.Tensor  # (N,)
    ious: torch.Tensor  # (N,)
    agree: bool
    err: float

    def reference(self):
        lut, cq, head = self.state
        f = self.fast
        return sequential_memory_update(
            lut, cq, head, self.x, self.labels, f.loss_type, f.momentum, self.ious, f.eps, inplace=True
        )

    def update(self):
        self.fast.update_memory(self.x, self.labels, self.ious)


def memory_update_case(loss_type: str, device="cpu") -> MemoryUpdateCase:
    """Set up one memory-update comparison (also used by benchmarks/gpu_check.py on a GPU)."""
    x, labels, ious = (t.to(device) for t in paper_batch())
    g = torch.Generator().manual_seed(1)
    fast = OIMLoss(DIM, LUT_SIZE, CQ_SIZE, loss_type=loss_type).to(device)
    with torch.no_grad():
        fast.lut.copy_(F.normalize(torch.randn(LUT_SIZE, DIM, generator=g), dim=1).to(device))
        fast.cq_head.fill_(CQ_SIZE - 37)  # the batch wraps around the queue end
    lut, cq, head = fast.lut.clone(), fast.cq.clone(), int(fast.cq_head)
    ref_lut, ref_cq, ref_head = sequential_memory_update(
        lut, cq, head, x, labels, loss_type, fast.momentum, ious, fast.eps
    )
    fast.update_memory(x, labels, ious)
    err = max((fast.lut - ref_lut).abs().max().item(), (fast.cq - ref_cq).abs().max().item())
    agree = err <= 1e-5 and int(fast.cq_head) == ref_head
    return MemoryUpdateCase(fast, (lut, cq, head), x, labels, ious, agree, err)


@_one_thread
def _memory_update(loss_type: str, quick: bool) -> dict:
    case = memory_update_case(loss_type)
    labels, agree, err = case.labels, case.agree, case.err
    t = _min_time(
        {"reference": case.reference, "fast": case.update},
        repeats=5 if quick else 50,
    )
    fg = labels > 0
    return {
        "name": f"{loss_type.lower()}_update",
        "reference_s": t["reference"],
        "fast_s": t["fast"],
        "speedup": t["reference"] / t["fast"],
        "agree": bool(agree),
        "max_abs_err": err,
        "rois": int(labels.numel()),
        "labeled": int((fg & (labels <= LUT_SIZE)).sum()),
        "unlabeled": int((labels > LUT_SIZE).sum()),
        "threads": torch.get_num_threads(),
    }


def oim_update(quick: bool = False) -> dict:
    return _memory_update("OIM", quick)


def loim_update(quick: bool = False) -> dict:
    return _memory_update("LOIM", quick)


def realistic_labels(n: int, seed: int = 0, ids: int = 20) -> torch.Tensor:
    """About half background, 30 % labeled from ``ids`` identities, the rest unlabeled."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, generator=g)
    labeled = torch.randint(1, ids + 1, (n,), generator=g)
    return torch.where(r < 0.5, 0, torch.where(r < 0.8, labeled, UNLABELED))


@_one_thread
def _protonorm(name: str, shape: tuple, quick: bool) -> dict:
    torch.manual_seed(0)
    x = (torch.randn(*shape) + 0.5).requires_grad_()
    grad = torch.randn(*shape)
    labels = realistic_labels(shape[0])
    two_d = len(shape) == 4
    pn = ProtoNorm2d(shape[1]) if two_d else ProtoNorm1d(shape[1])
    bn = nn.BatchNorm2d(shape[1]) if two_d else nn.BatchNorm1d(shape[1], affine=False)
    weight = pn.weight.detach().clone().requires_grad_() if pn.affine else None
    bias = pn.bias.detach().clone().requires_grad_() if pn.affine else None

    def run_fast():
        x.grad = None
        pn(x, labels).backward(grad)
        return x.grad

    def run_reference():
        x.grad = None
        reference_protonorm(x, labels, pn.eps, weight, bias)[0].backward(grad)
        return x.grad

    def run_floor():
        x.grad = None
        bn(x).backward(grad)

    g_fast = run_fast().clone()
    y_fast = pn(x, labels).detach()
    g_ref = run_reference().clone()
    y_ref = reference_protonorm(x, labels, pn.eps, weight, bias)[0].detach()
    err = max((y_fast - y_ref).abs().max().item(), (g_fast - g_ref).abs().max().item())

    t = _min_time(
        {"reference": run_reference, "fast": run_fast, "floor": run_floor},
        repeats=(3 if two_d else 20) if quick else (5 if two_d else 100),
    )
    return {
        "name": name,
        "reference_s": t["reference"],
        "fast_s": t["fast"],
        "floor_s": t["floor"],
        "speedup": t["reference"] / t["fast"],
        "floor_ratio": t["fast"] / t["floor"],
        "reference_floor_ratio": t["reference"] / t["floor"],
        "agree": bool(err <= 1e-4),
        "max_abs_err": err,
        "shape": list(shape),
        "prototypes": int(len(set(labels[labels != UNLABELED].tolist())) + int((labels == UNLABELED).sum())),
        "threads": torch.get_num_threads(),
    }


def protonorm1d(quick: bool = False) -> dict:
    return _protonorm("protonorm1d", (640, 256), quick)


def protonorm2d(quick: bool = False) -> dict:
    return _protonorm("protonorm2d", (160, 512, 7, 7) if quick else (640, 512, 7, 7), quick)


BENCHMARKS = {
    "oim_update": oim_update,
    "loim_update": loim_update,
    "protonorm1d": protonorm1d,
    "protonorm2d": protonorm2d,
}
