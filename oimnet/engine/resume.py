"""What ``--resume`` finds in OUTPUT_DIR, made safe to continue from.

- Stale temporary files of an attempt killed while writing
  (``.epoch_XXX.pth.tmp-<pid>`` of a process that is gone) are removed.
- The newest checkpoint that reads back completely is used; a truncated or
  otherwise unreadable newer one is renamed ``epoch_XXX.pth.corrupt`` (kept,
  never picked up again) and the fallback is logged.
- Its config must match the one in use (oimnet.checkpoint_config).
- Epoch completion markers (``epoch_XXX.done``, written once the epoch's
  evaluation and MLflow logging are done, see EpochDoneHook): a resumed
  checkpoint without one was killed between its save and the end of its
  epoch's work, which the trainer then redoes (see ``Trainer.replay``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from oimnet.checkpoint import checkpoint_epoch, list_checkpoints

log = logging.getLogger("oimnet")

_TMP = re.compile(r"^\..+\.tmp-(\d+)$")
REQUIRED = ("model", "optimizer", "lr_scheduler", "epoch", "global_step", "seed")


def done_marker(ckpt: str | os.PathLike) -> Path:
    """``epoch_003.pth`` -> ``epoch_003.done`` (same folder)."""
    p = Path(ckpt)
    return p.with_suffix(".done")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(out: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files in out whose writer process is gone."""
    removed = []
    d = Path(out)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _TMP.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
            log.info("removed %s (left by an attempt killed while writing it)", p)
    return removed


def _read(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a dict, got {type(state).__name__}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"missing entries {', '.join(missing)}")
    return state


def load_intact_checkpoint(out: str | os.PathLike) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint in out that reads back whole, or
    None when there is none. Unreadable newer ones are renamed ``.corrupt``.
    Raises ValueError naming the files when checkpoints exist but none reads."""
    bad = []
    for path in reversed(list_checkpoints(out)):
        try:
            state = _read(path)
        except Exception as exc:  # noqa: BLE001 - torch/zip/pickle errors come in many types
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            corrupt = path.with_name(path.name + ".corrupt")
            os.replace(path, corrupt)
            bad.append(f"{path.name} ({why})")
            log.warning(
                "--resume: checkpoint %s cannot be read (%s); kept as %s, trying the previous one",
                path,
                why,
                corrupt.name,
            )
            continue
        if bad:
            log.warning(
                "--resume: falling back to %s (epoch %d), the newest intact checkpoint", path, checkpoint_epoch(path)
            )
        return path, state
    if bad:
        raise ValueError(
            f"--resume: no intact checkpoint in {out}: {'; '.join(bad)} (renamed *.corrupt); "
            f"remove them to start from scratch"
        )
    return None
