"""Training checkpoints: the release's layout plus what exact resumption needs.

Layout (a ``torch.save`` dict): "model", "optimizer", "lr_scheduler", "epoch"
(as the release) and ours: "scaler", "rng", "config" (merged YAML),
"global_step", "seed", "mlflow_run_id". Files are written to a temporary name
and renamed, so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^epoch_(\d+)\.pth$")


def checkpoint_path(output_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(output_dir) / f"epoch_{epoch:03d}.pth"


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def find_last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest epoch in output_dir, or None."""
    d = Path(output_dir)
    if not d.is_dir():
        return None
    best = None
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load one of our training checkpoints (it holds RNG states, hence not weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
