"""Detection DataLoaders over the records of oimnet.data.load_records.

Each batch is ``(images, targets)``: images a list of float tensors
(3, H, W) in [0, 1] at the files' original size (PIL decode + to-tensor,
as the authors' release; the model resizes them to INPUT.MIN_SIZE /
MAX_SIZE); targets a list of ``{"boxes": FloatTensor (n, 4) original
pixels, "labels": LongTensor (n,) pids, "img_name": str, "index": int}``.
Training images are flipped left-right at original size with their boxes.

Training randomness (order and flips) is drawn in the main process by
:class:`EpochBatchSampler` from a generator seeded by (seed, epoch), so it
does not depend on the number of workers, and a loader rebuilt with the same
seed (after ``set_epoch(k)``) replays epoch k exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from . import transforms as T
from .records import DatasetError


class DetectionDataset(Dataset):
    """Records -> (image tensor, target). Items are indexed by ``i`` or by
    ``(i, flip)`` as the training sampler yields them."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> tuple[torch.Tensor, dict]:
        index, flip = item if isinstance(item, tuple) else (item, False)
        rec = self.records[index]
        try:
            with Image.open(rec["img_path"]) as f:
                img = f.convert("RGB")
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{rec['img_path']}: cannot read image ({exc})") from exc
        boxes = np.asarray(rec["boxes"], np.float32)
        if flip:
            img, boxes = T.hflip(img, boxes)
        target = {
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.from_numpy(rec["pids"].astype(np.int64)),
            "img_name": rec["img_name"],
            "index": int(index),
        }
        return T.to_tensor(img), target


def collate(batch):
    """[(image, target)] -> (list of images, list of targets) (sizes differ)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class EpochBatchSampler(Sampler):
    """Shuffled batches of ``(index, flip)`` for training.

    Epoch e uses a torch.Generator seeded with ``seed * 1_000_003 + e``:
    a permutation of ``indices`` and one flip coin (p = flip_prob) per item.
    Iterating advances the epoch; ``set_epoch(k)`` makes the next iteration
    epoch k. Incomplete last batches are dropped when there is at least one
    full batch.

    With ``world_size`` N > 1 the sequence is cut into global batches of
    N * batch_size items and rank r takes items [r * batch_size, (r + 1) *
    batch_size) of each: the N ranks together see exactly the batches one
    process with batch N * batch_size sees (same order, same flips).
    """

    def __init__(
        self,
        indices: Sequence[int],
        batch_size: int,
        seed: int,
        flip_prob: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(indices) == 0:
            raise DatasetError("training split has no image with a box")
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochBatchSampler: rank {rank} outside a world of {world_size}")
        self.indices = torch.as_tensor(list(indices), dtype=torch.int64)
        self.batch_size, self.seed, self.flip_prob = int(batch_size), int(seed), float(flip_prob)
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch_size = self.batch_size * self.world_size
        if self.world_size > 1 and len(indices) < self.global_batch_size:
            raise DatasetError(
                f"training split has {len(indices)} images with a box, fewer than one global batch of "
                f"{self.world_size} workers x {self.batch_size} (INPUT.BATCH_SIZE_TRAIN)"
            )
        self.drop_last = len(indices) >= self.global_batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.global_batch_size if self.drop_last else -(-n // self.global_batch_size)

    def epoch_items(self, epoch: int) -> list[tuple[int, bool]]:
        """The (index, flip) sequence of one epoch (before batching), the same on every rank."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = self.indices[torch.randperm(len(self.indices), generator=g)]
        flips = torch.rand(len(self.indices), generator=g) < self.flip_prob
        return list(zip(order.tolist(), flips.tolist()))

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        items = self.epoch_items(self.epoch)
        self.epoch += 1
        for start in range(0, len(self) * self.global_batch_size, self.global_batch_size):
            first = start + self.rank * self.batch_size
            yield items[first : first + self.batch_size]


def _seed_worker(worker_id: int) -> None:
    """Seed numpy/random in a worker from torch's per-worker seed (no
    transform draws from them today; this keeps future ones reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _records(cfg, split: str) -> list[dict]:
    from .datasets import load_records

    return load_records(cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT, split, synth_kwargs=synth_kwargs_from_cfg(cfg))


def synth_kwargs_from_cfg(cfg) -> dict:
    """Generator settings from cfg.INPUT.SYNTH (0 / "" = generator default)."""
    synth = cfg.INPUT.get("SYNTH", None) if hasattr(cfg.INPUT, "get") else None
    if synth is None:
        return {}
    out = {"seed": int(synth.get("SEED", 0) or 0)}
    if synth.get("IDENTITIES", 0):
        out["identities"] = int(synth.IDENTITIES)
    if synth.get("FRAMES", 0):
        out["frames"] = int(synth.FRAMES)
    if synth.get("SIZE", ""):
        out["size"] = str(synth.SIZE)
    return out


def _base_seed(cfg, seed: int | None) -> int:
    if seed is not None:
        return int(seed)
    cfg_seed = int(cfg.get("SEED", -1)) if hasattr(cfg, "get") else -1
    if cfg_seed >= 0:
        return cfg_seed
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def build_train_loader(
    cfg, seed: int | None = None, records: Sequence[dict] | None = None, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """Shuffled, flipped training batches of INPUT.BATCH_SIZE_TRAIN images (this rank's share, see EpochBatchSampler).

    Images without any box are left out (their ``index`` still refers to the
    full train record list). ``seed`` defaults to cfg.SEED (negative: drawn
    from torch's global RNG). ``loader.batch_sampler.set_epoch(k)`` selects
    the epoch replayed by the next iteration (for resuming).
    """
    records = list(records) if records is not None else _records(cfg, "train")
    dataset = DetectionDataset(records)
    keep = [i for i, r in enumerate(records) if len(r["boxes"]) > 0]
    base = _base_seed(cfg, seed)
    sampler = EpochBatchSampler(keep, cfg.INPUT.BATCH_SIZE_TRAIN, base, rank=rank, world_size=world_size)
    workers = int(cfg.INPUT.NUM_WORKERS_TRAIN)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(base),
        pin_memory=False,
        persistent_workers=False,
    )


def build_test_loader(cfg, split: str, records: Sequence[dict] | None = None) -> DataLoader:
    """Gallery or query images in record order, INPUT.BATCH_SIZE_TEST per batch,
    no augmentation."""
    if split not in ("gallery", "query"):
        raise ValueError(f"split {split!r}: expected 'gallery' or 'query'")
    records = list(records) if records is not None else _records(cfg, split)
    dataset = DetectionDataset(records)
    return DataLoader(
        dataset,
        batch_size=int(cfg.INPUT.BATCH_SIZE_TEST),
        shuffle=False,
        num_workers=int(cfg.INPUT.NUM_WORKERS_TEST),
        collate_fn=collate,
        worker_init_fn=_seed_worker,
    )
