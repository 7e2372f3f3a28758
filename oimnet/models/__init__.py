"""Detector, re-id head and norms of OIMNet / OIMNet++ / OIMNet+++.

``build_model(cfg)`` gives the model a config describes;
``load_release_state_dict(model, state_dict)`` loads the authors' released
checkpoints strictly (see :mod:`oimnet.models.checkpoint_io`).
"""

from oimnet.models.checkpoint_io import (
    LoadReport,
    ReleaseCheckpointError,
    check_release_state_dict,
    load_release_state_dict,
    model_from_checkpoint,
    read_checkpoint,
    read_state_dict,
)
from oimnet.models.detector import LOSS_KEYS, OIMNet, build_model

__all__ = [
    "build_model",
    "OIMNet",
    "LOSS_KEYS",
    "load_release_state_dict",
    "check_release_state_dict",
    "read_state_dict",
    "model_from_checkpoint",
    "read_checkpoint",
    "LoadReport",
    "ReleaseCheckpointError",
]
