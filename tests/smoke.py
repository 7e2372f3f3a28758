"""Shared helpers for end-to-end tests: configs for short synthetic runs."""

from __future__ import annotations

from pathlib import Path

from oimnet.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def smoke_config(tmp: Path, data_root: Path, **overrides):
    """experiments/synthetic.yaml with paths under tmp and the given overrides."""
    opts = {
        "OUTPUT_DIR": str(tmp / "out"),
        "INPUT.DATA_ROOT": str(data_root),
        "DEVICE": "cpu",
    }
    opts.update(overrides)
    return load_config(str(ROOT / "experiments" / "synthetic.yaml"), opts)
