"""OIMNet: C4 Faster R-CNN with an OIM re-id head, and ``build_model(cfg)``.

Images reach the model at their original size as 3 x H x W float tensors in
[0, 1] (PIL decode + to_tensor), as in the authors' release. The model's
``transform`` -- torchvision's ``GeneralizedRCNNTransform``, the release's own
preprocessing -- normalizes them with the ImageNet mean/std, resizes each by
``min(MIN_SIZE / short side, MAX_SIZE / long side)`` (bilinear, no
antialiasing, size rounded down: a 1080 x 1920 frame becomes 843 x 1500),
zero-pads the batch to a multiple of 32 and scales target / query boxes per
axis; detections are mapped back per axis. Every box in and out is
(x1, y1, x2, y2) in original pixels. The resize runs where the images are
(on the GPU when they were moved there first).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

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
    """transform -> backbone (stem..res4) -> RPN -> RoI heads (res5, box predictor, re-id).

    train: ``model(images, targets) -> {loss_rpn_reg, loss_rpn_cls,
    loss_proposal_reg, loss_proposal_cls, loss_box_reid}`` (unweighted).
    eval: ``model(images) -> [{boxes (n, 4), scores (n,), embeddings (n, 256)}]``;
    ``model(images, query_boxes=[(1, 4), ...])`` puts each query box first;
    ``model.embed_boxes(images, boxes_list) -> [(n_i, 256)]``.
    """

    def __init__(
        self,
        backbone: Backbone,
        rpn: RegionProposalNetwork,
        roi_heads: OIMRoIHeads,
        transform: GeneralizedRCNNTransform,
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.transform = transform  # no parameters or buffers: the state dict is the release's

    # ------------------------------------------------------------ input
    def preprocess(
        self, images: list[Tensor], boxes: list[Tensor] | None = None
    ) -> tuple[ImageList, list[Tensor] | None, list[tuple[int, int]]]:
        """Original-size images (3, H_i, W_i) in [0, 1] -> (batch, boxes, original sizes).

        batch: ImageList of (N, 3, H', W') normalized, resized, zero-padded to
        a multiple of 32, with the resized (h_i, w_i); boxes: the given (n_i, 4)
        per image scaled per axis to the resized image (None when not given).
        """
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError("images: expected a non-empty list of 3 x H x W float tensors")
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
                raise ValueError(
                    f"images[{i}]: expected a 3 x H x W float tensor in [0, 1], got {tuple(img.shape)} {img.dtype}"
                )
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        targets = None if boxes is None else [{"boxes": b} for b in boxes]
        batch, targets = self.transform(list(images), targets)
        return batch, None if targets is None else [t["boxes"] for t in targets], original_sizes

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
        if query_boxes is not None and len(query_boxes) != len(images):
            raise ValueError(
                f"query_boxes: expected one (1, 4) tensor per image ({len(images)}), got {len(query_boxes)}"
            )
        batch, query_boxes, original_sizes = self.preprocess(images, query_boxes)
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(batch, features)
        detections = self.roi_heads.detect(features, proposals, batch.image_sizes, query_boxes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def _forward_train(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        batch, boxes, _ = self.preprocess(images, [t["boxes"] for t in targets])
        targets = [{**t, "boxes": b} for t, b in zip(targets, boxes)]
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
        boxes = [b.to(device=images[i].device, dtype=torch.float32).reshape(-1, 4) for i, b in enumerate(boxes_list)]
        batch, boxes, _ = self.preprocess(images, boxes)
        features = self.backbone(batch.tensors)
        return self.roi_heads.embed(features, boxes, batch.image_sizes)


def build_model(cfg) -> OIMNet:
    """The model a config describes (MODEL.BACKBONE/RPN/ROI_HEAD/LOSS, INPUT.MIN_SIZE/MAX_SIZE)."""
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
    transform = GeneralizedRCNNTransform(
        min_size=int(cfg.INPUT.MIN_SIZE),
        max_size=int(cfg.INPUT.MAX_SIZE),
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        size_divisible=32,
    )
    return OIMNet(backbone, rpn, roi_heads, transform)
