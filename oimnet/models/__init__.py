"""Detector, re-id head and norms of OIMNet / OIMNet++ / OIMNet+++.

``build_model(cfg)`` gives the model a config describes. Loading
checkpoints (ours and the authors' release) is :mod:`oimnet.checkpoint`'s job.
"""

from oimnet.models.detector import LOSS_KEYS, OIMNet, build_model

__all__ = ["build_model", "OIMNet", "LOSS_KEYS"]
