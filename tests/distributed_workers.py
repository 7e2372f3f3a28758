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
        if ":" in fn_name:  # "module:function" of another importable module
            import importlib

            module, name = fn_name.split(":")
            fn = getattr(importlib.import_module(module), name)
        else:
            fn = globals()[fn_name]
        result = fn(rank, world, *args)
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


# ----------------------------------------------------------------- whole detector
VARIANTS = {
    "OIMNet": {"MODEL.LOSS.TYPE": "OIM", "MODEL.ROI_HEAD.NORM_TYPE": "none", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet++": {"MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet+++": {"MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.ROI_HEAD.AUGMENT": True},
}
IMAGES, IMAGES_PER_RANK = 4, 2


def tiny_detector_config(variant: str):
    from oimnet.config import load_config

    overrides = {
        "MODEL.BACKBONE.NAME": "tiny",
        "MODEL.LOSS.LUT_SIZE": 10,
        "MODEL.LOSS.CQ_SIZE": 6,
        "MODEL.RPN.ANCHOR_SIZES": [32, 64, 128],
        "MODEL.RPN.BATCH_SIZE_TRAIN": 64,
        "MODEL.RPN.PRE_NMS_TOPN_TRAIN": 300,
        "MODEL.RPN.POST_NMS_TOPN_TRAIN": 60,
        # Fewer RoIs than proposals: every image yields the full quota (see the README on loss means).
        "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 32,
        # detector_batch()'s 128 x 160 images keep their size in the model's resize
        "INPUT.MIN_SIZE": 128,
        "INPUT.MAX_SIZE": 160,
    }
    overrides.update(VARIANTS[variant])
    return load_config(None, overrides)


def detector_batch():
    """4 images of one size (one padded canvas on any split) with persons drawn at their GT boxes."""
    g = torch.Generator().manual_seed(7)
    images, targets = [], []
    ids = [[3, 5555], [7, 3], [5555, 1], [7, 2]]
    for i in range(IMAGES):
        img = torch.rand(3, 128, 160, generator=g) * 0.3
        x = 8 + 20 * i
        boxes = torch.tensor([[x, 10.0, x + 40, 110.0], [x + 60, 20.0, x + 100, 120.0]])
        for x1, y1, x2, y2 in boxes.long().tolist():
            img[:, y1:y2, x1:x2] = 0.6 + 0.1 * i
        images.append(img)
        targets.append({"boxes": boxes, "labels": torch.tensor(ids[i]), "index": i})
    return images, targets


# (H, W) of the 4 images of mixed_size_batch(), each kept by the model's resize
# (short side 128, long side <= 160): rank 0's canvas is 128 x 160, rank 1's 160 x 128,
# one process's (and with the common canvas every rank's) 160 x 160.
MIXED_SIZES = ((128, 160), (128, 160), (160, 128), (128, 128))


def mixed_size_batch():
    """4 textured images of MIXED_SIZES with two persons each (boxes inside the smallest)."""
    g = torch.Generator().manual_seed(8)
    images, targets = [], []
    ids = [[3, 5555], [7, 3], [5555, 1], [7, 2]]
    for i, (h, w) in enumerate(MIXED_SIZES):
        img = torch.rand(3, h, w, generator=g) * 0.3
        boxes = torch.tensor([[8.0 + 4 * i, 10.0, 48.0 + 4 * i, 110.0], [60.0, 20.0 + 2 * i, 100.0, 120.0]])
        for x1, y1, x2, y2 in boxes.long().tolist():
            img[:, y1:y2, x1:x2] = 0.5 + 0.1 * i + 0.3 * torch.rand(3, y2 - y1, x2 - x1, generator=g)
        images.append(img)
        targets.append({"boxes": boxes, "labels": torch.tensor(ids[i]), "index": i})
    return images, targets


# float64: every step compared (rounding cannot move a ReLU input across zero);
# float32: the first step's forward only (see test_distributed.py).
DETECTOR_RUNS = {"float64": STEPS, "float32": 1}


def train_detector(
    rank: int | None, world: int, variant: str, dtype: str = "float64", steps: int = STEPS, mixed: bool = False
):
    """``steps`` SGD steps of a tiny detector in ``dtype`` on this rank's images (``rank`` None: one process, all 4).

    The images are :func:`detector_batch`'s, or :func:`mixed_size_batch`'s
    when ``mixed``. bn1 trains its statistics as in every run. Keyed sampling
    on both sides. Returns per step the ranks' mean of every loss term, every
    parameter's gradient after DDP's reduction, every buffer after the step
    and the (H, W) canvas the backbone saw.
    """
    from oimnet.distributed import all_reduce_sum
    from oimnet.distributed.ddp import unwrap, wrap_data_parallel
    from oimnet.models import build_model
    from oimnet.models.sampling import set_sampling_keys, use_keyed_sampling

    torch.manual_seed(0)
    model = build_model(tiny_detector_config(variant)).to(getattr(torch, dtype)).train()
    model = wrap_data_parallel(model, torch.device("cpu")) if rank is not None else use_keyed_sampling(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)  # the paper's SGD
    images, targets = mixed_size_batch() if mixed else detector_batch()
    canvas = []
    unwrap(model).backbone.register_forward_pre_hook(lambda _, args: canvas.append(torch.tensor(args[0].shape[-2:])))
    mine = range(IMAGES) if rank is None else range(rank * IMAGES_PER_RANK, (rank + 1) * IMAGES_PER_RANK)
    images = [images[i].to(getattr(torch, dtype)) for i in mine]
    targets = [{**targets[i], "boxes": targets[i]["boxes"].to(getattr(torch, dtype))} for i in mine]
    out: dict[str, torch.Tensor] = {}
    for step in range(steps):
        set_sampling_keys(model, seed=1, epoch=0, indices=[t["index"] + IMAGES * step for t in targets])
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        for name, value in losses.items():
            out[f"{step}/loss/{name}"] = all_reduce_sum(value.detach().clone()) / world
        for name, p in unwrap(model).named_parameters():
            if p.grad is not None:
                out[f"{step}/grad/{name}"] = p.grad.clone()
        optimizer.step()
        for name, buf in unwrap(model).named_buffers():
            out[f"{step}/buf/{name}"] = buf.clone()
        out[f"{step}/canvas"] = canvas[-1]
    return out


def detector_worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    out = {
        f"{v}/{dtype}/{k}": t
        for v in VARIANTS
        for dtype, steps in DETECTOR_RUNS.items()
        for k, t in train_detector(rank, world, v, dtype, steps).items()
    }
    out.update({f"mixed/{k}": t for k, t in train_detector(rank, world, "OIMNet", "float32", 1, mixed=True).items()})
    return out


# ----------------------------------------------------------------- whole runs (trainer + hooks)
RUN = {
    "INPUT.SYNTH.FRAMES": 20,
    "INPUT.SYNTH.IDENTITIES": 8,
    "INPUT.BATCH_SIZE_TRAIN": 2,
    "MODEL.LOSS.LUT_SIZE": 8,
    "MODEL.LOSS.CQ_SIZE": 16,
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 32,
    "SOLVER.BASE_LR": 0.003,
    "DISP_PERIOD": 1,
}
MEMORY_KEYS = ("reid_loss.lut", "reid_loss.cq", "reid_loss.cq_head", "running_mean", "running_var")


def run_config(out_dir: str, data_root: str, **overrides):
    from tests.smoke import smoke_config

    opts = dict(RUN)
    opts.update(overrides)
    return smoke_config(Path(out_dir), Path(data_root), **{"OUTPUT_DIR": out_dir, **opts})


def memory_probe():
    """A hook recording, after every step, the loss terms and the memory/running statistics of the bare model."""
    from oimnet.engine.hooks import HookBase

    class MemoryProbe(HookBase):
        def __init__(self):
            self.records: dict[str, torch.Tensor] = {}

        def after_step(self) -> None:
            t = self.trainer
            for name, value in t.step_output.items():
                self.records[f"{t.global_step}/loss/{name}"] = torch.tensor(value)
            for name, buf in t.model.named_buffers():
                if name.endswith(MEMORY_KEYS):
                    self.records[f"{t.global_step}/buf/{name}"] = buf.detach().clone()

    return MemoryProbe()


def train_run_worker(rank: int, world: int, out_dir: str, data_root: str, overrides: dict) -> dict[str, torch.Tensor]:
    """``train_run`` of the run config on this rank (WORLD_SIZE = world, no tracking); what a memory probe saw."""
    from oimnet.engine.trainer import train_run

    cfg = run_config(out_dir, data_root, **{"SOLVER.WORLD_SIZE": world, **overrides})
    probe = memory_probe()
    train_run(cfg, track=False, hooks=[probe])
    return probe.records


def memory_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.endswith(MEMORY_KEYS)}


# ----------------------------------------------------------------- sharded evaluation
EVAL_RUN = {
    "INPUT.SYNTH.FRAMES": 20,
    "INPUT.SYNTH.IDENTITIES": 8,
    "INPUT.BATCH_SIZE_TEST": 3,  # batches of 3 records: the last one short, uneven shards
    "MODEL.LOSS.LUT_SIZE": 8,
    "MODEL.LOSS.CQ_SIZE": 16,
    "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.0,  # a random-init model still detects
    "MODEL.RPN.POST_NMS_TOPN_TEST": 30,
}


def eval_config(out_dir: str, data_root: str):
    from tests.smoke import smoke_config

    return smoke_config(Path(out_dir), Path(data_root), **{"OUTPUT_DIR": out_dir, **EVAL_RUN})


def eval_predictor(cfg):
    """The seeded random-init model of ``cfg`` in a CPU predictor (the same weights in every process)."""
    from oimnet.models import build_model
    from oimnet.models.predictor import Predictor

    torch.manual_seed(0)
    return Predictor(build_model(cfg), "cpu")


def cache_tensors(cache: dict) -> dict[str, torch.Tensor]:
    return {f"{k}/{i}": torch.from_numpy(a) for k, arrays in cache.items() for i, a in enumerate(arrays)}


def sharded_eval_worker(rank: int, world: int, out_dir: str, data_root: str) -> dict[str, torch.Tensor]:
    """evaluate() of the seeded model on this rank's shard; rank 0: the cache and metrics; all: the indices it ran."""
    from oimnet.constants import SCALAR_METRICS
    from oimnet.distributed.eval_shards import sharded_eval_cache
    from oimnet.engine.evaluation import evaluate

    cfg = eval_config(out_dir, data_root)
    predictor = eval_predictor(cfg)
    ran: list[int] = []
    predict_split = predictor.predict_split

    def recording(cfg, split, records=None, indices=None, **kw):
        ran.extend(int(i) + (0 if split == "gallery" else 100000) for i in indices)
        return predict_split(cfg, split, records, indices, **kw)

    predictor.predict_split = recording
    result = evaluate(predictor, cfg, out_dir, tag="sharded")
    gt = evaluate(predictor, cfg, out_dir, tag="sharded_gt", use_gt=True)  # gallery = GT boxes: mAP > 0 at random init
    out = {"ran": torch.tensor(ran, dtype=torch.int64), "is_none": torch.tensor(result is None and gt is None)}
    if result is not None:
        for name, res in (("metric", result), ("metric_gt", gt)):
            out.update(
                {
                    f"{name}/{k}": torch.tensor(res[k], dtype=torch.float64)
                    for k in SCALAR_METRICS
                    if res.get(k) is not None
                }
            )
        out.update({f"cache/{k}": v for k, v in cache_tensors(sharded_eval_cache(predictor, cfg)).items()})
    else:
        out["second_call_none"] = torch.tensor(sharded_eval_cache(predictor, cfg) is None)
    return out
