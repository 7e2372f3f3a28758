"""Shared helpers for end-to-end tests: configs for short synthetic runs."""

from __future__ import annotations

from pathlib import Path

from oimnet.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# The smallest world a 2-epoch run learns something in: 24 frames, 8 identities,
# a checkpoint every epoch, evaluation at the end (a few seconds an epoch).
TINY_RUN = {
    "INPUT.SYNTH.FRAMES": 24,
    "INPUT.SYNTH.IDENTITIES": 8,
    "SOLVER.MAX_EPOCHS": 2,
    "MODEL.LOSS.LUT_SIZE": 8,
    "MODEL.LOSS.CQ_SIZE": 16,
    "DISP_PERIOD": 2,
    "CKPT_PERIOD": 1,
    "EVAL_PERIOD": 2,
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 16,
}


def smoke_config(tmp: Path, data_root: Path, **overrides):
    """experiments/synthetic.yaml with paths under tmp and the given overrides."""
    opts = {
        "OUTPUT_DIR": str(tmp / "out"),
        "INPUT.DATA_ROOT": str(data_root),
        "DEVICE": "cpu",
    }
    opts.update(overrides)
    return load_config(str(ROOT / "experiments" / "synthetic.yaml"), opts)
