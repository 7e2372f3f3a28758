"""The configuration a training checkpoint carries, compared with the one in use.

Our checkpoints hold the merged config as YAML (``"config"``). Two checks use it:

- ``--resume`` continues a run only under the settings it was trained with:
  every key may differ except those that change nothing about what is
  trained (RESUME_FREE: paths, worker counts, logging / checkpoint /
  evaluation periods and test-time settings, device, MLflow names).
  Otherwise the parameters MLflow shows would no longer describe the run.
- ``--eval --ckpt`` (and the evaluate CLI / demo) builds the model the config
  describes; a checkpoint of another variant with the same tensor names (an
  OIMNet+++ ProtoNorm checkpoint under a BatchNorm config loads strictly)
  would be scored as the wrong model. MODEL_DEFINING keys must agree.

The authors' release checkpoints carry no config and are not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MODEL_DEFINING",
    "RESUME_FREE",
    "ConfigMismatchError",
    "check_model_config",
    "check_resume_config",
    "checkpoint_config",
]

MODEL_DEFINING = (
    "MODEL.BACKBONE.NAME",
    "MODEL.ROI_HEAD.NORM_TYPE",
    "MODEL.ROI_HEAD.BN_NECK",
    "MODEL.ROI_HEAD.AUGMENT",
    "MODEL.LOSS.TYPE",
    "MODEL.LOSS.LUT_SIZE",
    "MODEL.LOSS.CQ_SIZE",
    "MODEL.LOSS.OIM_SCALAR",
    "MODEL.RPN.ANCHOR_SIZES",
    "MODEL.RPN.ASPECT_RATIOS",
)

# Keys (or "PREFIX." groups) free to change on --resume.
RESUME_FREE = (
    "OUTPUT_DIR",
    "INPUT.DATA_ROOT",
    "INPUT.NUM_WORKERS_TRAIN",
    "INPUT.NUM_WORKERS_TEST",
    "INPUT.BATCH_SIZE_TEST",
    "MODEL.BACKBONE.WEIGHTS",  # only the initialisation, long replaced by the checkpoint's weights
    "MODEL.RPN.PRE_NMS_TOPN_TEST",
    "MODEL.RPN.POST_NMS_TOPN_TEST",
    "MODEL.ROI_HEAD.SCORE_THRESH_TEST",
    "MODEL.ROI_HEAD.NMS_THRESH_TEST",
    "MODEL.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST",
    "EVAL_PERIOD",
    "EVAL_USE_GT",
    "EVAL_USE_CACHE",
    "EVAL_USE_CBGM",
    "EVAL_GALLERY_SIZE",
    "EVAL_GT_AT_END",
    "CKPT_PERIOD",
    "DISP_PERIOD",
    "TF_BOARD",
    "DEVICE",
    "NVIDIA_DEVICE",
    "MLFLOW.",
    "SOLVER.WORLD_SIZE",  # a run resumes on any number of workers ...
    "SOLVER.KEYED_SAMPLING",  # ... with the N-worker sampling if asked (see the README)
)

# Per-worker batch size: free as long as the global batch (workers x per-worker) stays.
_PER_WORKER_BATCH, _WORKERS = "INPUT.BATCH_SIZE_TRAIN", "SOLVER.WORLD_SIZE"


class ConfigMismatchError(ValueError):
    """The config in use and the checkpoint's disagree; the message lists the keys."""


def checkpoint_config(obj: Any) -> dict[str, Any] | None:
    """The flattened config a checkpoint object carries, or None (release checkpoints)."""
    from omegaconf import OmegaConf

    from oimnet.config import flatten_mapping

    text = obj.get("config") if isinstance(obj, Mapping) else None
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        data = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    except Exception:  # noqa: BLE001 - an unreadable config is treated as absent
        return None
    return flatten_mapping(data) if isinstance(data, dict) else None


def _free(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_FREE)


def _differences(saved: dict, current: dict, keys) -> list[str]:
    missing = object()
    out = []
    for k in keys:
        a, b = saved.get(k, missing), current.get(k, missing)
        if a is not missing and a != b:
            out.append(f"{k}: {a!r} in the checkpoint, {'(absent)' if b is missing else repr(b)} now")
    return out


def _global_batch(flat: dict) -> int | None:
    """Images per optimizer step over all workers, or None when the keys are absent."""
    if _PER_WORKER_BATCH not in flat:
        return None
    return int(flat[_PER_WORKER_BATCH]) * int(flat.get(_WORKERS, 1) or 1)


def check_resume_config(cfg, state: Mapping, path) -> None:
    """Raise ConfigMismatchError listing every key that differs from the
    checkpoint's config and changes what is trained (see RESUME_FREE)."""
    from oimnet.config import flatten

    saved = checkpoint_config(state)
    if saved is None:
        return
    current = flatten(cfg)
    keys = sorted(k for k in set(saved) | set(current) if not _free(k))
    diff = []
    was, now = _global_batch(saved), _global_batch(current)
    if was is not None:
        keys.remove(_PER_WORKER_BATCH)
        if was != now:
            diff.append(f"global batch ({_WORKERS} x {_PER_WORKER_BATCH}): {was} in the checkpoint, {now} now")
    diff += _differences(saved, current, keys)
    if diff:
        raise ConfigMismatchError(
            f"--resume: {path} was trained with other settings; these keys changed:\n  "
            + "\n  ".join(diff)
            + "\nSet them back to continue this run, or give a new OUTPUT_DIR to start another one "
            "(paths, worker counts, periods, test-time and MLflow settings may change)"
        )


def check_model_config(cfg, obj: Mapping, path) -> None:
    """Raise ConfigMismatchError when the checkpoint's config describes
    another model than cfg (MODEL_DEFINING keys)."""
    from oimnet.config import flatten

    saved = checkpoint_config(obj)
    if saved is None:
        return
    diff = _differences(saved, flatten(cfg), MODEL_DEFINING)
    if diff:
        raise ConfigMismatchError(
            f"checkpoint {path} is another model than the config describes:\n  "
            + "\n  ".join(diff)
            + '\nUse the config the checkpoint was trained with (it is stored in the checkpoint\'s "config" '
            "entry and in its run's config.yaml), or pass these keys on the command line"
        )
