"""Training on a validation split: the split of a run, and the hook that evaluates on it.

With ``VAL.ENABLED`` a run holds out an identity-disjoint validation split of
its training set (:mod:`oimnet.data.splits`, seeded by ``VAL.SEED``, size
``VAL.FRACTION`` of the training identities), trains on the rest with
``MODEL.LOSS.LUT_SIZE`` set to the identities left (so the logged config
records it), evaluates on the validation split every ``EVAL_PERIOD`` epochs
and after the last (metrics ``val_mAP``, ``val_top1``, ...), and on the test
split once, after the last epoch (``mAP``, ``top1``, ...). Sweeps rank and
stop trials on ``val_mAP``; tables report the test numbers with the
validation ones beside them.

``VAL.ENABLED: false`` is the release's protocol: every training identity is
trained on and the test split is evaluated every ``EVAL_PERIOD`` epochs.

The split is written to ``OUTPUT_DIR/val_split.json`` at the start and read
back when the run resumes (a split from other settings is an error, never
silently replaced).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from oimnet.engine.hooks import HookBase

log = logging.getLogger("oimnet")

VAL_PREFIX = "val_"


@dataclass
class RunSplit:
    """The validation split of one run and the records it gives."""

    split: object  # oimnet.data.splits.ValSplit
    records: object  # oimnet.data.splits.SplitRecords
    path: Path


def prepare_val_split(cfg: DictConfig) -> tuple[DictConfig, RunSplit | None]:
    """(config with the LUT size of the remaining identities, the run's split), or (cfg, None) without VAL.

    Raises ValueError when OUTPUT_DIR holds a split carved with other settings.
    """
    if not bool(cfg.VAL.ENABLED):
        return cfg, None
    from oimnet.data import load_records
    from oimnet.data.splits import SPLIT_FILE, ValSplit, apply, carve
    from oimnet.distributed import is_main_process

    out = Path(cfg.OUTPUT_DIR)
    path = out / SPLIT_FILE
    train = load_records(cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT, "train")
    gallery_size = int(cfg.EVAL_GALLERY_SIZE) if int(cfg.EVAL_GALLERY_SIZE) > 0 else 100
    if path.is_file():
        split = ValSplit.load(path)
        want = (cfg.INPUT.DATASET, int(cfg.VAL.SEED), float(cfg.VAL.FRACTION))
        if (split.dataset, split.seed, split.fraction) != want:
            raise ValueError(
                f"{path}: validation split of dataset {split.dataset}, seed {split.seed}, fraction "
                f"{split.fraction}, but the config asks for {want[0]}, seed {want[1]}, fraction {want[2]}; "
                "use another OUTPUT_DIR or the split's settings"
            )
    else:
        split = carve(
            train,
            cfg.INPUT.DATASET,
            fraction=float(cfg.VAL.FRACTION),
            seed=int(cfg.VAL.SEED),
            gallery_size=gallery_size,
        )
        if is_main_process():  # every rank carves the same split (seeded); one writes it (same temp file name)
            out.mkdir(parents=True, exist_ok=True)
            split.save(path)
    records = apply(split, train)
    cfg = cfg.copy()
    cfg.MODEL.LOSS.LUT_SIZE = split.lut_size
    s = split.summary()
    log.info(
        "validation split (seed %d, %.0f%% of the training ids): %d held-out ids, %d images, %d queries; "
        "training on %d ids (LUT size %d), %d images; %s",
        s["val_seed"],
        100 * s["val_fraction"],
        s["val_ids"],
        s["val_images"],
        s["val_queries"],
        s["train_ids"],
        split.lut_size,
        len(records.train),
        path,
    )
    return cfg, RunSplit(split, records, path)


class ValEvalHook(HookBase):
    """Every ``period`` epochs and after the last: evaluate on the validation split.

    The scalar metrics go to ``trainer.epoch_metrics`` prefixed ``val_``; the
    split's sizes (``val_ids``, ``val_queries``, ``val_images``,
    ``train_ids``) are added once, at the first epoch of a run. Files:
    ``results_val_epochXXX.json`` (the test files are left alone).
    """

    def __init__(self, period: int, run_split: RunSplit):
        self.period = int(period)
        self.run_split = run_split

    def after_epoch(self) -> None:
        from oimnet.engine.evaluation import evaluate_model, scalar_metrics

        t = self.trainer
        done = t.epoch + 1
        if done == 1 and t.is_main:
            s = self.run_split.split.summary()
            t.epoch_metrics.update({k: float(s[k]) for k in ("val_ids", "val_queries", "val_images", "train_ids")})
        if not (done % self.period == 0 or done == t.max_epochs):
            return
        r = self.run_split.records
        # Every rank infers its shard of the images; rank 0 alone gets the result.
        result = evaluate_model(
            t.model, t.cfg, t.device, t.out_dir, tag=f"val_epoch{done:03d}", records=(r.gallery, r.query, r.protocol)
        )
        if not t.is_main:
            return
        t.epoch_metrics.update({f"{VAL_PREFIX}{k}": v for k, v in scalar_metrics(result).items()})
