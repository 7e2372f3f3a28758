"""Before a run: absolute paths, the dataset in place, the log file, signals.

Shared by training (:mod:`oimnet.engine.trainer`) and checkpoint evaluation.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("oimnet")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a scheduler stopping the job) treated like Ctrl-C."""


def prepare_config(cfg: DictConfig) -> DictConfig:
    """Absolute paths (runs may change directory, e.g. inside Ray) and a ready dataset.

    For INPUT.DATASET "synthetic" the generated set is created at DATA_ROOT if
    absent; any other dataset must already be at DATA_ROOT.
    """
    cfg = cfg.copy()
    cfg.OUTPUT_DIR = str(Path(cfg.OUTPUT_DIR).expanduser().resolve())
    cfg.INPUT.DATA_ROOT = str(Path(cfg.INPUT.DATA_ROOT).expanduser().resolve())
    if cfg.INPUT.DATASET == "synthetic":
        from oimnet.data import ensure_synthetic

        ensure_synthetic(cfg.INPUT.DATA_ROOT, **synth_kwargs(cfg))
    elif not Path(cfg.INPUT.DATA_ROOT).is_dir():
        raise FileNotFoundError(
            f"INPUT.DATA_ROOT: {cfg.INPUT.DATA_ROOT} does not exist; point it at the "
            f"{cfg.INPUT.DATASET} download (see `python -m oimnet.data.check`)"
        )
    return cfg


def synth_kwargs(cfg: DictConfig) -> dict:
    """Generator arguments from INPUT.SYNTH (0 / "" = the generator's default)."""
    s = cfg.INPUT.SYNTH
    kw: dict = {"seed": int(s.SEED)}
    if s.IDENTITIES:
        kw["identities"] = int(s.IDENTITIES)
    if s.FRAMES:
        kw["frames"] = int(s.FRAMES)
    if s.SIZE:
        w, h = str(s.SIZE).lower().split("x")
        kw["size"] = (int(w), int(h))
    return kw


def check_lut_size(cfg: DictConfig) -> None:
    """MODEL.LOSS.LUT_SIZE must hold every training identity of the dataset."""
    from oimnet.data import num_train_ids

    n = num_train_ids(cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT)
    if n > cfg.MODEL.LOSS.LUT_SIZE:
        raise ValueError(
            f"MODEL.LOSS.LUT_SIZE: invalid value {cfg.MODEL.LOSS.LUT_SIZE}; the training split of "
            f"{cfg.INPUT.DATA_ROOT} has {n} identities, so it must be at least {n}"
        )


def setup_logging(output_dir: Path, to_file: bool = True) -> logging.Handler:
    """Log to ``output_dir/train.log`` (and stderr once); returns the file handler to remove later.

    ``to_file`` False (the other ranks of a multi-worker run): stderr only, a NullHandler is returned.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log") if to_file else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("[oimnet] %(message)s"))
        log.addHandler(stream)
    return handler


def install_sigterm() -> Callable[[], None]:
    """SIGTERM -> TrainingInterrupted (the run ends KILLED); returns the restorer. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise TrainingInterrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
