"""Cost of the multi-worker synchronisation (gloo, CPU) at the paper's shapes, and 2- vs 1-worker step time.

- ``sync_oim``: OIMLoss (LOIM, LUT 5532 x 256, queue 5000) forward in
  training on 640 RoIs per rank (5 images x 128), 2 gloo ranks (gathers of
  features, labels, IoUs; the update of 1280 RoIs on each rank) against one
  process on its own 640 RoIs.
- ``sync_protonorm``: ProtoNorm1d (256) and ProtoNorm2d (512 x 7 x 7, one
  res5 layer) forward + backward on 640 RoIs per rank, 2 ranks vs 1 process.
- ``step_2v1``: one SGD step of the tiny detector (OIMNet+++), 2 ranks x 2
  images under DDP against 1 process x 4 images.
``bytes_per_step`` is what one rank sends per step, computed from the shapes.
Times are medians over repeats; on a loaded machine they are upper bounds.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

ROIS, FEATURES, LUT, CQ = 640, 256, 5532, 5000
PN2D_CHANNELS, PN2D_SIDE = 512, 7


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _oim_inputs(rank: int, rois: int):
    from oimnet.losses import OIMLoss

    g = torch.Generator().manual_seed(rank)
    x = torch.nn.functional.normalize(torch.randn(rois, FEATURES, generator=g), dim=1)
    labels = torch.randint(0, LUT + 1, (rois,), generator=g)
    labels[torch.rand(rois, generator=g) < 0.3] = 5555
    ious = torch.rand(rois, generator=g) * 0.5 + 0.5
    return OIMLoss(FEATURES, LUT, CQ, loss_type="LOIM").train(), x, labels, ious


def _pn_inputs(rank: int, rois: int):
    from oimnet.models.protonorm import ProtoNorm1d, ProtoNorm2d

    g = torch.Generator().manual_seed(rank)
    labels = torch.randint(0, 60, (rois,), generator=g)
    labels[torch.rand(rois, generator=g) < 0.3] = 5555
    x1 = torch.randn(rois, FEATURES, generator=g).requires_grad_()
    x2 = torch.randn(rois, PN2D_CHANNELS, PN2D_SIDE, PN2D_SIDE, generator=g).requires_grad_()
    return ProtoNorm1d(FEATURES).train(), ProtoNorm2d(PN2D_CHANNELS).train(), x1, x2, labels


def _time_pieces(rank: int, repeats: int) -> dict[str, float]:
    loss, x, labels, ious = _oim_inputs(rank, ROIS)
    pn1, pn2, x1, x2, pn_labels = _pn_inputs(rank, ROIS)

    def protonorm():
        (pn1(x1, pn_labels).sum() + pn2(x2, pn_labels).sum()).backward()

    return {"oim": _median_time(lambda: loss(x, labels, ious), repeats), "pn": _median_time(protonorm, repeats)}


def pieces_worker(rank: int, world: int, repeats: int) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return {k: torch.tensor(v) for k, v in _time_pieces(rank, repeats).items()}


def step_worker(rank: int, world: int, repeats: int) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return {"step": torch.tensor(_detector_step_time(rank, world, repeats))}


def _detector_step_time(rank: int | None, world: int, repeats: int) -> float:
    from oimnet.distributed.ddp import wrap_data_parallel
    from oimnet.models import build_model
    from oimnet.models.sampling import set_sampling_keys, use_keyed_sampling
    from tests import distributed_workers as dw

    torch.manual_seed(0)
    model = build_model(dw.tiny_detector_config("OIMNet+++")).train()
    model = wrap_data_parallel(model, torch.device("cpu")) if rank is not None else use_keyed_sampling(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    images, targets = dw.detector_batch()
    mine = range(4) if rank is None else range(rank * 2, rank * 2 + 2)
    images, targets = [images[i] for i in mine], [targets[i] for i in mine]

    def step():
        set_sampling_keys(model, 1, 0, [t["index"] for t in targets])
        opt.zero_grad()
        sum(model(images, targets).values()).backward()
        opt.step()

    return _median_time(step, repeats)


def _bytes_per_rank() -> dict[str, int]:
    oim = 8 + ROIS * FEATURES * 4 + ROIS * 2 * 8  # count, features (float32), labels + IoUs (float64)
    pn1 = 8 + ROIS * 8 + (3 * FEATURES + 1) * 4 + 2 * FEATURES * 4  # count, labels, stats, backward sums
    pn2 = 8 + ROIS * 8 + (3 * PN2D_CHANNELS + 1) * 4 + 2 * PN2D_CHANNELS * 4
    return {"oim": oim, "protonorm1d": pn1, "protonorm2d_layer": pn2}


def _spawn(fn: str, repeats: int) -> list[dict]:
    import tempfile

    from tests.distributed_workers import run_on_ranks

    with tempfile.TemporaryDirectory() as d:
        return run_on_ranks(f"benchmarks.bench_distributed:{fn}", 2, Path(d), repeats)


def bench_sync_pieces(quick: bool) -> dict:
    repeats = 3 if quick else 10
    torch.set_num_threads(1)
    local = _time_pieces(0, repeats)
    ranks = _spawn("pieces_worker", repeats)
    two = {k: max(float(r[k]) for r in ranks) for k in ("oim", "pn")}
    b = _bytes_per_rank()
    return {
        "name": "sync_oim_protonorm",
        "reference_s": local["oim"] + local["pn"],
        "fast_s": two["oim"] + two["pn"],
        "oim_1proc_s": local["oim"],
        "oim_2rank_s": two["oim"],
        "protonorm_1proc_s": local["pn"],
        "protonorm_2rank_s": two["pn"],
        "bytes_per_step": b,
        "note": "reference = 1 process on its 640 RoIs (no sync); fast = each of 2 gloo ranks (sync + 1280-RoI update)",
    }


def bench_step_2v1(quick: bool) -> dict:
    repeats = 2 if quick else 5
    torch.set_num_threads(1)
    one = _detector_step_time(None, 1, repeats)
    two = max(float(r["step"]) for r in _spawn("step_worker", repeats))
    return {
        "name": "step_2v1",
        "reference_s": one,
        "fast_s": two,
        "speedup": one / two,
        "note": "tiny OIMNet+++ SGD step: 1 process x 4 images vs 2 gloo ranks x 2 images (1 thread each)",
    }


BENCHMARKS = {"sync_oim_protonorm": bench_sync_pieces, "step_2v1": bench_step_2v1}
