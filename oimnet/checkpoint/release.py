"""Strict loading of the authors' released checkpoints (and of ours).

The release's ``{"model": state_dict}`` must be consumed key by key with
matching shapes. Two of its modules are never used by the release's forward
pass and are dropped: ``roi_heads.box_head`` (the torchvision RoIHeads slot;
the release runs its deep copy ``roi_heads.reid_head``) and
``roi_heads.faster_rcnn_predictor``. Our queue head
``roi_heads.reid_loss.cq_head`` is absent from release files and loads as 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from oimnet.checkpoint.files import ReleaseCheckpointError, read_checkpoint, state_dict_of

__all__ = [
    "UNUSED_RELEASE_PREFIXES",
    "OPTIONAL_KEYS",
    "LoadReport",
    "check_release_state_dict",
    "load_release_state_dict",
    "infer_from_keys",
    "build_model_to_load",
    "model_from_checkpoint",
]

UNUSED_RELEASE_PREFIXES = ("roi_heads.box_head.", "roi_heads.faster_rcnn_predictor.")
OPTIONAL_KEYS = ("roi_heads.reid_loss.cq_head",)


@dataclass
class LoadReport:
    """Outcome of matching a state dict against a model.

    missing: model keys absent from the file (optional ones excluded);
    unexpected: file keys the model does not have (dropped ones excluded);
    mismatched: (key, file shape, model shape); dropped: never-used release keys;
    defaulted: optional keys absent from the file, left at their default.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = 20) -> str:
        def show(keys: list) -> str:
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return "".join(f"\n    {k}" for k in keys[:limit]) + more

        mism = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
        lines = [
            f"  missing ({len(self.missing)}):{show(self.missing)}",
            f"  unexpected ({len(self.unexpected)}):{show(self.unexpected)}",
            f"  mismatched ({len(mism)}):{show(mism)}",
            f"  dropped, never used by the release ({len(self.dropped)})",
        ]
        if self.defaulted:
            lines.append(f"  left at default ({len(self.defaulted)}):{show(self.defaulted)}")
        return "\n".join(lines)


def check_release_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> LoadReport:
    """Compare keys and shapes without loading anything."""
    own = model.state_dict()
    report = LoadReport()
    for key, value in state_dict.items():
        if key in own:
            if tuple(value.shape) != tuple(own[key].shape):
                report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        elif key.startswith(UNUSED_RELEASE_PREFIXES):
            report.dropped.append(key)
        else:
            report.unexpected.append(key)
    for key in own:
        if key not in state_dict:
            (report.defaulted if key in OPTIONAL_KEYS else report.missing).append(key)
    return report


def load_release_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> LoadReport:
    """Load strictly; raise ReleaseCheckpointError listing every offending key.

    Values are cast to the model's dtypes (the release's float16 LUT/queue
    load into float32 buffers on CPU). Optional keys absent from the file are
    reset to zero (queue head 0).
    """
    report = check_release_state_dict(model, state_dict)
    if not report.ok:
        raise ReleaseCheckpointError("checkpoint does not fit the model:\n" + report.format())
    dropped = set(report.dropped)
    kept = {k: v for k, v in state_dict.items() if k not in dropped}
    own = model.state_dict()
    for key in report.defaulted:
        kept[key] = torch.zeros_like(own[key])
    model.load_state_dict(kept, strict=True)
    return report


_LAYER_BLOCKS = re.compile(r"^backbone\.layer(\d)\.(\d+)\.")


def infer_from_keys(state_dict: Mapping[str, Tensor]) -> dict:
    """What the keys reveal: config values plus notes on what they cannot tell.

    Returns {"overrides": {dotted key: value}, "notes": [str]}; overrides hold
    MODEL.BACKBONE.NAME, MODEL.ROI_HEAD.NORM_TYPE, MODEL.LOSS.LUT_SIZE,
    MODEL.LOSS.CQ_SIZE when determinable.
    """
    from oimnet.models.backbone import BACKBONES

    overrides: dict = {}
    notes: list[str] = []
    stem = state_dict.get("backbone.conv1.weight")
    bottleneck = "backbone.layer1.0.conv3.weight" in state_dict
    blocks = {}
    for key in state_dict:
        m = _LAYER_BLOCKS.match(key)
        if m:
            layer, idx = int(m.group(1)), int(m.group(2))
            blocks[layer] = max(blocks.get(layer, 0), idx + 1)
    found = None
    if stem is not None:
        for name, spec in BACKBONES.items():
            if (
                spec.stem_width == stem.shape[0]
                and (spec.block.expansion == 4) == bottleneck
                and tuple(blocks.get(i, 0) for i in (1, 2, 3)) == spec.layers[:3]
            ):
                found = name
                break
    if found:
        overrides["MODEL.BACKBONE.NAME"] = found
    else:
        notes.append(f"backbone: not one of {sorted(BACKBONES)} (blocks per stage {blocks}, bottleneck={bottleneck})")

    prefix = "roi_heads.embedding_head.projectors.feat_res5.1."
    if any(k.startswith(prefix) for k in state_dict):
        if prefix + "weight" in state_dict:
            notes.append(
                "norm: feat_res5.1 has affine weights, which neither BatchNorm1d(affine=False) nor ProtoNorm has"
            )
        else:
            overrides["MODEL.ROI_HEAD.NORM_TYPE"] = "protonorm"
            notes.append(
                "norm: feat_res5.1 holds running statistics: protonorm or batchnorm (their keys are identical; "
                "the release only has protonorm, so protonorm is assumed)"
            )
    else:
        overrides["MODEL.ROI_HEAD.NORM_TYPE"] = "none"
    if "roi_heads.reid_loss.lut" in state_dict:
        overrides["MODEL.LOSS.LUT_SIZE"] = int(state_dict["roi_heads.reid_loss.lut"].shape[0])
    if "roi_heads.reid_loss.cq" in state_dict:
        overrides["MODEL.LOSS.CQ_SIZE"] = int(state_dict["roi_heads.reid_loss.cq"].shape[0])
    notes.append("augment (OIMNet+++): not visible in the keys (ProtoNorm2d keeps BatchNorm2d's keys)")
    notes.append("loss type OIM/LOIM: not visible in the keys")
    cls = state_dict.get("rpn.head.cls_logits.weight")
    if cls is not None:
        notes.append(f"rpn: {cls.shape[0]} anchors per location")
    return {"overrides": overrides, "notes": notes}


def build_model_to_load(cfg) -> nn.Module:
    """``build_model(cfg)`` without the backbone's random-init warning: its weights are about to be loaded."""
    import logging

    from oimnet.models.detector import build_model

    backbone_log = logging.getLogger("oimnet.models.backbone")
    level = backbone_log.level
    backbone_log.setLevel(logging.ERROR)
    try:
        return build_model(cfg)
    finally:
        backbone_log.setLevel(level)


def model_from_checkpoint(cfg, path: str, checkpoint: Mapping | None = None):
    """Build the model ``cfg`` describes and load ``path`` into it strictly.

    Accepts our training checkpoints and the authors' release alike
    (``{"model": sd, ...}`` or a bare state dict, read with weights_only=True).
    ``checkpoint``: the object already read from ``path`` (read_checkpoint),
    so a caller that needs its other entries does not read the file twice.
    Returns ``(model, report)``; raises FileNotFoundError or
    ReleaseCheckpointError (a ValueError) naming the file and the keys.
    """
    from oimnet.checkpoint_config import check_model_config

    obj = read_checkpoint(path) if checkpoint is None else checkpoint
    check_model_config(cfg, obj, path)  # a checkpoint of another variant: named error, not the wrong model scored
    state_dict = state_dict_of(obj, path)
    model = build_model_to_load(cfg)
    try:
        report = load_release_state_dict(model, state_dict)
    except ReleaseCheckpointError as exc:
        raise ReleaseCheckpointError(f"{path}: {exc}") from None
    return model, report
