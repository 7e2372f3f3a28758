"""OIMNet: C4 Faster R-CNN with an OIM re-id head, and ``build_model(cfg)``.

Images come already resized by the data loader (3 x H x W floats in [0, 1]);
the model only normalizes them with the ImageNet mean/std and pads them into
one batch. Every box in and out is (x1, y1, x2, y2) in those images' pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from oimnet.losses.oim import OIMLoss
from oimnet.models.backbone import Backbone, build_resnet
from oimnet.models.heads import EMBEDDING_DIM, BoxPredictor, EmbeddingHead, Float32RPNHead
from oimnet.models.protonorm import convert_bn2d_to_protonorm
from oimnet.models.roi_heads import OIMRoIHeads

__all__ = ["OIMNet", "build_model", "LOSS_KEYS"]

LOSS_KEYS = ("loss_rpn_reg", "loss_rpn_cls", "loss_proposal_reg", "loss_proposal_cls", "loss_box_reid")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OIMNet(nn.Module):
    """backbone (stem..res4) -> RPN -> RoI heads (res5, box predictor, re-id).

    train: ``model(images, targets) -> {loss_rpn_reg, loss_rpn_cls,
    loss_proposal_reg, loss_proposal_cls, loss_box_reid}`` (unweighted).
    eval: ``model(images) -> [{boxes (n, 4), scores (n,), embeddings (n, 256)}]``;
    ``model(images, query_boxes=[(1, 4), ...])`` puts each query box first;
    ``model.embed_boxes(images, boxes_list) -> [(n_i, 256)]``.
    """

    def __init__(
        self, backbone: Backbone, rpn: RegionProposalNetwork, roi_heads: OIMRoIHeads, size_divisible: int = 32
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.size_divisible = size_divisible
        # not persistent: the release's state dict has no such keys
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    # ------------------------------------------------------------ input
    def batch_images(self, images: list[Tensor]) -> ImageList:
        """Normalize and zero-pad (after normalization) to (N, 3, H', W') with H', W' divisible by size_divisible."""
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError("images: expected a non-empty list of 3 x H x W float tensors")
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
                raise ValueError(
                    f"images[{i}]: expected a 3 x H x W float tensor in [0, 1], got {tuple(img.shape)} {img.dtype}"
                )
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
        d = self.size_divisible
        h = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        w = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = images[0].new_zeros((len(images), 3, h, w))
        for i, img in enumerate(images):
            batch[i, :, : img.shape[1], : img.shape[2]].copy_((img - self.pixel_mean) / self.pixel_std)
        return ImageList(batch, sizes)

    @staticmethod
    def _check_targets(targets: list[dict[str, Tensor]], n: int) -> None:
        if targets is None or len(targets) != n:
            raise ValueError(
                f"targets: expected one dict per image ({n}), got {None if targets is None else len(targets)}"
            )
        for i, t in enumerate(targets):
            b, l = t.get("boxes"), t.get("labels")
            if b is None or b.dim() != 2 or b.shape[1] != 4 or not b.is_floating_point():
                raise ValueError(f"targets[{i}]['boxes']: expected a float tensor (n, 4)")
            if l is None or l.shape != (b.shape[0],) or l.dtype != torch.int64:
                raise ValueError(f"targets[{i}]['labels']: expected an int64 tensor ({b.shape[0]},) of pids")

    # ------------------------------------------------------------ forward
    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        query_boxes: list[Tensor] | None = None,
    ):
        if self.training:
            self._check_targets(targets, len(images))
            return self._forward_train(images, targets)
        batch = self.batch_images(images)
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(batch, features)
        if query_boxes is not None and len(query_boxes) != len(images):
            raise ValueError(
                f"query_boxes: expected one (1, 4) tensor per image ({len(images)}), got {len(query_boxes)}"
            )
        return self.roi_heads.detect(features, proposals, batch.image_sizes, query_boxes)

    def _forward_train(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        batch = self.batch_images(images)
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, [{"boxes": t["boxes"]} for t in targets])
        losses = self.roi_heads.forward_train(features, proposals, batch.image_sizes, targets)
        losses["loss_rpn_reg"] = rpn_losses["loss_rpn_box_reg"]
        losses["loss_rpn_cls"] = rpn_losses["loss_objectness"]
        return {k: losses[k] for k in LOSS_KEYS}

    def embed_boxes(self, images: list[Tensor], boxes_list: list[Tensor]) -> list[Tensor]:
        """Embeddings (n_i, 256) of the given boxes (n_i, 4), computed by RoI-pooling each box."""
        if len(boxes_list) != len(images):
            raise ValueError(f"boxes_list: expected one (n, 4) tensor per image ({len(images)}), got {len(boxes_list)}")
        batch = self.batch_images(images)
        features = self.backbone(batch.tensors)
        boxes = [b.to(device=batch.tensors.device, dtype=torch.float32).reshape(-1, 4) for b in boxes_list]
        return self.roi_heads.embed(features, boxes, batch.image_sizes)


def build_model(cfg) -> OIMNet:
    """The model a config describes (MODEL.BACKBONE/RPN/ROI_HEAD/LOSS)."""
    m = cfg.MODEL
    backbone, res5 = build_resnet(str(m.BACKBONE.NAME), str(m.BACKBONE.WEIGHTS or ""))
    if m.ROI_HEAD.AUGMENT:
        res5 = convert_bn2d_to_protonorm(res5) or res5
    c4, c5 = res5.out_channels

    anchor_generator = AnchorGenerator(
        sizes=(tuple(int(s) for s in m.RPN.ANCHOR_SIZES),),
        aspect_ratios=(tuple(float(r) for r in m.RPN.ASPECT_RATIOS),),
    )
    rpn = RegionProposalNetwork(
        anchor_generator,
        Float32RPNHead(c4, anchor_generator.num_anchors_per_location()[0], conv_depth=1),
        fg_iou_thresh=m.RPN.POS_THRESH_TRAIN,
        bg_iou_thresh=m.RPN.NEG_THRESH_TRAIN,
        batch_size_per_image=m.RPN.BATCH_SIZE_TRAIN,
        positive_fraction=m.RPN.POS_FRAC_TRAIN,
        pre_nms_top_n={"training": m.RPN.PRE_NMS_TOPN_TRAIN, "testing": m.RPN.PRE_NMS_TOPN_TEST},
        post_nms_top_n={"training": m.RPN.POST_NMS_TOPN_TRAIN, "testing": m.RPN.POST_NMS_TOPN_TEST},
        nms_thresh=m.RPN.NMS_THRESH,
    )
    reid_loss = OIMLoss(
        num_features=EMBEDDING_DIM,
        num_pids=m.LOSS.LUT_SIZE,
        num_cq_size=m.LOSS.CQ_SIZE,
        oim_momentum=m.LOSS.OIM_MOMENTUM,
        oim_scalar=m.LOSS.OIM_SCALAR,
        loss_type=str(m.LOSS.TYPE),
        eps=m.LOSS.OIM_EPS,
    )
    roi_heads = OIMRoIHeads(
        res5,
        BoxPredictor(c5, 2),
        EmbeddingHead(c5, str(m.ROI_HEAD.NORM_TYPE)),
        reid_loss,
        fg_iou_thresh=m.ROI_HEAD.POS_THRESH_TRAIN,
        bg_iou_thresh=m.ROI_HEAD.NEG_THRESH_TRAIN,
        batch_size_per_image=m.ROI_HEAD.BATCH_SIZE_TRAIN,
        positive_fraction=m.ROI_HEAD.POS_FRAC_TRAIN,
        score_thresh=m.ROI_HEAD.SCORE_THRESH_TEST,
        nms_thresh=m.ROI_HEAD.NMS_THRESH_TEST,
        detections_per_img=m.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST,
    )
    return OIMNet(backbone, rpn, roi_heads)
