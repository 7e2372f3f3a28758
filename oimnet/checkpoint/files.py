"""Checkpoint files: writing (atomic), finding, reading; the training layout.

Training checkpoints keep the release's layout plus what exact resumption needs.

Layout (a ``torch.save`` dict of tensors and plain values, so it loads with
``weights_only=True``): "model", "optimizer", "lr_scheduler", "epoch" (as the
release) and ours: "scaler", "config" (merged YAML), "global_step", "seed",
"metrics" (the latest evaluation's scalars), "mlflow_run_id" (when tracked).
No RNG state: every epoch reseeds from (seed, epoch), which is what makes a
resumed run exact. Files are written to a temporary name
and renamed, so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

_NAME = re.compile(r"^epoch_(\d+)\.pth$")


class ReleaseCheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message lists the keys."""


def checkpoint_path(output_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(output_dir) / f"epoch_{epoch:03d}.pth"


class _FdWriter:
    """A file-like ``write`` that writes everything or raises the OS error."""

    def __init__(self, fd: int):
        self.fd = fd
        self.error: OSError | None = None  # torch may mask it with its own RuntimeError on the way out

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.error = exc
            raise
        return len(view)

    def flush(self) -> None:
        pass


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save to ``.NAME.tmp-<pid>``, fsync, rename to path. The previous
    file at path stays intact on any failure; a full disk raises
    OSError(ENOSPC, "no space left on device writing PATH")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # Through our own writer: a full disk then arrives as OSError(ENOSPC)
        # (torch's path writer, and a buffered file's short writes, turn it into
        # a bare RuntimeError "unexpected pos").
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        writer = _FdWriter(fd)
        try:
            torch.save(obj, writer)
            os.fsync(fd)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device writing {path}") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The epoch a checkpoint file name says (``epoch_007.pth`` -> 7), or None for other names."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The run's epoch checkpoints in output_dir, oldest epoch first ([] if none or no folder)."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(e, p) for p in d.iterdir() if (e := checkpoint_epoch(p)) is not None]
    return [p for _, p in sorted(found)]


def find_last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest epoch in output_dir, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch checkpoints (and their ``.done`` markers)."""
    for p in list_checkpoints(output_dir)[:-keep]:
        p.unlink(missing_ok=True)
        p.with_suffix(".done").unlink(missing_ok=True)


def remove_checkpoints_after(output_dir: str | os.PathLike, epoch: int) -> None:
    """Delete the epoch checkpoints of epochs later than ``epoch``."""
    for p in list_checkpoints(output_dir):
        if checkpoint_epoch(p) > epoch:
            p.unlink()


def read_checkpoint(path: str) -> Mapping:
    """The object a checkpoint file holds, read with ``torch.load(weights_only=True)``.

    Raises FileNotFoundError or ReleaseCheckpointError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ReleaseCheckpointError(
            f"checkpoint {path!r}: cannot be read with torch.load(weights_only=True): {exc}"
        ) from exc


def state_dict_of(obj, path: str) -> dict[str, Tensor]:
    """The model state dict inside a checkpoint object: ``{"model": sd, ...}`` or a bare sd."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReleaseCheckpointError(
            f"checkpoint {path!r}: expected a state dict of tensors or a dict with a 'model' state dict"
        )
    return dict(obj)


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The model state dict of a checkpoint file (see read_checkpoint, state_dict_of)."""
    return state_dict_of(read_checkpoint(path), path)
