"""ResNet backbones split for the C4 detector: trunk (stem..layer3) and res5 head.

The trunk maps an image batch (N, 3, H, W) to ``feat_res4`` (N, C4, H/16, W/16);
the res5 head maps RoI features (R, C4, 14, 14) to globally max-pooled
``feat_res4`` (R, C4) and ``feat_res5`` (R, C5).

Module names follow torchvision's ResNet (``conv1, bn1, layer1..layer4``) so the
release's state-dict keys (``backbone.layer3.5.conv2.weight``,
``roi_heads.reid_head.layer4.0.bn1.weight``, ...) map one to one.

Backbones (MODEL.BACKBONE.NAME):
  resnet50 (paper; C4 1024, C5 2048), resnet34 / resnet18 (C4 256, C5 512),
  tiny (ours, C4 64, C5 128): BasicBlock ResNet with widths 16/32/64/128 for
  the CPU smoke profile.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

_LOG = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Backbone",
    "Res5Head",
    "build_resnet",
    "load_imagenet_weights",
]


@dataclass(frozen=True)
class BackboneSpec:
    """Block type, blocks per stage and stage widths (output channels of the stem / of layer1's blocks' base width)."""

    block: type
    layers: tuple[int, int, int, int]
    stem_width: int
    widths: tuple[int, int, int, int]  # planes per stage (Bottleneck output = 4x planes)

    @property
    def c4(self) -> int:
        return self.widths[2] * self.block.expansion

    @property
    def c5(self) -> int:
        return self.widths[3] * self.block.expansion


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(tv_resnet.Bottleneck, (3, 4, 6, 3), 64, (64, 128, 256, 512)),
    "resnet34": BackboneSpec(tv_resnet.BasicBlock, (3, 4, 6, 3), 64, (64, 128, 256, 512)),
    "resnet18": BackboneSpec(tv_resnet.BasicBlock, (2, 2, 2, 2), 64, (64, 128, 256, 512)),
    "tiny": BackboneSpec(tv_resnet.BasicBlock, (1, 1, 1, 1), 16, (16, 32, 64, 128)),
}


class _ResNet(nn.Module):
    """torchvision-layout ResNet without the classifier, any stage widths."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.inplanes = spec.stem_width
        self.conv1 = nn.Conv2d(3, spec.stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 2, 2)
        for i, (planes, blocks, stride) in enumerate(zip(spec.widths, spec.layers, strides)):
            setattr(self, f"layer{i + 1}", self._make_layer(spec.block, planes, blocks, stride))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


class Backbone(nn.Module):
    """Stem + layer1..layer3: (N, 3, H, W) -> {"feat_res4": (N, C4, ~H/16, ~W/16)}.

    As in the authors' release, conv1's weight and bn1's affine weight and
    bias get no gradients, but bn1 follows ``train()`` like every other
    BatchNorm: in training it normalizes with batch statistics and updates
    its running mean / var.
    """

    def __init__(self, resnet: _ResNet, out_channels: int):
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.out_channels = out_channels
        for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return OrderedDict([("feat_res4", x)])


class Res5Head(nn.Module):
    """layer4 on RoI features, then global max pooling of its input and output.

    (R, C4, h, w) -> {"feat_res4": (R, C4), "feat_res5": (R, C5)}.
    """

    def __init__(self, resnet: _ResNet, in_channels: int, out_channels: int):
        super().__init__()
        self.layer4 = resnet.layer4
        self.out_channels = (in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feat = self.layer4(x)
        return OrderedDict(
            [
                ("feat_res4", F.adaptive_max_pool2d(x, 1).flatten(1)),
                ("feat_res5", F.adaptive_max_pool2d(feat, 1).flatten(1)),
            ]
        )


def read_imagenet_state(path: str, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision-format state dict file (``fc.*`` left out),
    read with ``weights_only=True``. Raises FileNotFoundError / ValueError
    naming MODEL.BACKBONE.WEIGHTS and the file: missing, not a torch file,
    or not a dict of tensors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MODEL.BACKBONE.WEIGHTS: no file at {path!r} (expected a local torchvision-format "
            f'{name} ImageNet state dict, e.g. resnet50-0676ba61.pth; or set it to "" for random init)'
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise ValueError(
            f"MODEL.BACKBONE.WEIGHTS {path!r}: not a state dict file readable with "
            f"torch.load(weights_only=True) ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"MODEL.BACKBONE.WEIGHTS {path!r}: expected a state dict, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"MODEL.BACKBONE.WEIGHTS {path!r}: expected a state dict of tensors, but "
            f"{len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not (first: {bad[0]!r})"
        )
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def load_imagenet_weights(resnet: nn.Module, path: str, name: str) -> None:
    """Load a torchvision-format ImageNet state dict (``conv1.weight``, ..., ``fc.*``).

    The classifier ``fc.*`` is ignored; every other key must match exactly.
    Raises FileNotFoundError / ValueError naming the file and the bad keys.
    """
    state = read_imagenet_state(path, name)
    own = resnet.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"MODEL.BACKBONE.WEIGHTS {path!r} does not fit backbone {name!r}: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, "
            f"shape mismatch {mismatched[:8]}"
        )
    resnet.load_state_dict(state, strict=True)


def build_resnet(name: str, weights: str = "") -> tuple[Backbone, Res5Head]:
    """Trunk and res5 head of ResNet ``name``, optionally ImageNet-initialized.

    ``weights`` "" means random init; one warning line (logger
    ``oimnet.models.backbone``) says so, since the paper's numbers need
    ImageNet weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"MODEL.BACKBONE.NAME {name!r}: expected one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    resnet = _ResNet(spec)
    if weights:
        load_imagenet_weights(resnet, weights, name)
    else:
        _LOG.warning(
            "MODEL.BACKBONE.WEIGHTS is empty: %s starts from random init, numbers will not match the paper", name
        )
    return Backbone(resnet, spec.c4), Res5Head(resnet, spec.c4, spec.c5)
