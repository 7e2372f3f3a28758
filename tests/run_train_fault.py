"""``python -m tests.run_train_fault FAULT ARGS``: ``python -m oimnet.train ARGS`` with
one fault planted at a named point of the real run (tests only).

FAULT:
  kill-in-final-eval        SIGKILL when the last epoch's evaluation starts
                            (its checkpoint is written, its metrics are not)
  kill-after-checkpoint-1   SIGKILL right after epoch 1's checkpoint is written,
                            before that epoch's metrics reach MLflow
  kill-writing-checkpoint   SIGKILL half way through writing the first checkpoint
  fill-disk-after-epoch-1   after epoch 1's checkpoint, fill the file system of
                            OUTPUT_DIR (a real file) so the next checkpoint meets ENOSPC
  none                      no fault
"""

from __future__ import annotations

import os
import shutil
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def plant(fault: str) -> None:
    from oimnet.checkpoint import checkpoint_epoch
    from oimnet.engine import evaluation, hooks

    if fault == "kill-in-final-eval":
        real_eval = evaluation.evaluate_model

        def evaluate_model(model, cfg, device, out_dir, tag="final", use_gt=False):
            if tag == f"epoch{int(cfg.SOLVER.MAX_EPOCHS):03d}":
                _die()
            return real_eval(model, cfg, device, out_dir, tag=tag, use_gt=use_gt)

        evaluation.evaluate_model = evaluate_model
    elif fault in ("kill-after-checkpoint-1", "fill-disk-after-epoch-1"):
        real_save = hooks.save_atomic

        def save_atomic(obj, path):
            out = real_save(obj, path)
            if checkpoint_epoch(path) == 1:
                if fault == "kill-after-checkpoint-1":
                    _die()
                free = shutil.disk_usage(os.path.dirname(path)).free
                with open(os.path.join(os.path.dirname(os.path.dirname(path)), "filler"), "wb") as f:
                    f.write(b"\0" * max(0, free - 256 * 1024))  # leave room for logs, not for a checkpoint
            return out

        hooks.save_atomic = save_atomic
    elif fault == "kill-writing-checkpoint":
        import torch

        def save(obj, f, *args, **kwargs):
            f.write(b"PK\x03\x04" + b"\0" * 4096)  # the start of a zip that is never finished
            f.flush()
            _die()

        torch.save = save
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    plant(sys.argv[1])
    from oimnet.train import main

    sys.exit(main(sys.argv[2:]))
