"""RoI heads of the C4 detector: sampling, res5 head, box predictor, re-id.

Boxes are (x1, y1, x2, y2) in pixels of the resized input image (the model's
transform maps them from and back to original pixels). Labels
per RoI: 0 background, 1..L labeled identity, 5555 unlabeled person.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import MultiScaleRoIAlign, box_iou, clip_boxes_to_image, nms

from oimnet.models.heads import BoxPredictor, EmbeddingHead
from oimnet.models.precision import at_least_float32
from oimnet.models.protonorm import set_protonorm_labels

__all__ = ["OIMRoIHeads", "SampledRoIs"]


class SampledRoIs:
    """Training RoIs of a batch, concatenated over images.

    boxes: per image (R_i, 4); labels (R,) int64 pids/0; regression_targets
    (R, 4); ious (R,) IoU of each RoI with its best-matching GT box (0 when
    the image has no GT).
    """

    def __init__(self, boxes: list[Tensor], labels: Tensor, regression_targets: Tensor, ious: Tensor):
        self.boxes = boxes
        self.labels = labels
        self.regression_targets = regression_targets
        self.ious = ious


class OIMRoIHeads(nn.Module):
    """RoIAlign on feat_res4 -> res5 head -> box predictor + re-id embedding (+ OIM loss)."""

    def __init__(
        self,
        reid_head: nn.Module,
        box_predictor: BoxPredictor,
        embedding_head: EmbeddingHead,
        reid_loss: nn.Module,
        *,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 128,
        positive_fraction: float = 0.5,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        detections_per_img: int = 300,
    ):
        super().__init__()
        self.box_roi_pool = MultiScaleRoIAlign(featmap_names=["feat_res4"], output_size=14, sampling_ratio=2)
        self.reid_head = reid_head
        self.box_predictor = box_predictor
        self.embedding_head = embedding_head
        self.reid_loss = reid_loss
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    # ------------------------------------------------------------ training
    @torch.no_grad()
    def select_training_samples(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> SampledRoIs:
        """Add GT boxes to the proposals, match (IoU >= fg fg, < bg bg), sample per image."""
        boxes, labels, reg_targets, ious = [], [], [], []
        for props, tgt in zip(proposals, targets):
            props = at_least_float32(props)
            gt_boxes = tgt["boxes"].to(props.dtype)
            gt_labels = tgt["labels"]
            props = torch.cat([props, gt_boxes])
            if gt_boxes.numel() == 0:
                lab = torch.zeros(len(props), dtype=torch.int64, device=props.device)
                iou = torch.zeros(len(props), dtype=props.dtype, device=props.device)
                matched_gt = torch.zeros_like(props)
            else:
                quality = box_iou(gt_boxes, props)  # (G, P)
                matched = self.proposal_matcher(quality)
                iou = quality.max(dim=0).values
                idx = matched.clamp(min=0)
                lab = gt_labels[idx].to(torch.int64)
                lab[matched == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0
                lab[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1
                matched_gt = gt_boxes[idx]
            pos, neg = self.fg_bg_sampler([lab])
            keep = torch.where(pos[0] | neg[0])[0]
            boxes.append(props[keep])
            labels.append(lab[keep])
            ious.append(iou[keep])
            reg_targets.append(self.box_coder.encode_single(matched_gt[keep], props[keep]))
        return SampledRoIs(boxes, torch.cat(labels), torch.cat(reg_targets), torch.cat(ious))

    def forward_train(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Losses loss_proposal_cls, loss_proposal_reg, loss_box_reid (unweighted)."""
        rois = self.select_training_samples(proposals, targets)
        feat = self.roi_features(features, rois.boxes, image_sizes, labels=rois.labels)
        logits, deltas = self.box_predictor(feat)
        embeddings = self.embedding_head(feat, rois.labels)
        loss_cls, loss_reg = proposal_losses(logits, deltas, rois.labels, rois.regression_targets)
        loss_reid = self.reid_loss(embeddings, rois.labels, rois.ious)
        return {"loss_proposal_cls": loss_cls, "loss_proposal_reg": loss_reg, "loss_box_reid": loss_reid}

    # ------------------------------------------------------------ shared
    def roi_features(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_sizes: list[tuple[int, int]],
        labels: Tensor | None = None,
    ) -> Tensor:
        """Pooled res5 feature (R, C5) of the given boxes (RoIAlign 14x14 -> layer4 -> max pool).

        ``labels`` (R,) go to the 2-d ProtoNorms of an AUGMENT head for this call only.
        """
        pooled = self.box_roi_pool(features, boxes, image_sizes)
        set_protonorm_labels(self.reid_head, labels)
        try:
            return self.reid_head(pooled)["feat_res5"]
        finally:
            set_protonorm_labels(self.reid_head, None)

    def embed(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[Tensor]:
        """Embeddings (n_i, 256) of given boxes (n_i, 4) per image."""
        if sum(len(b) for b in boxes) == 0:
            return [b.new_zeros((0, self.embedding_head.projectors["feat_res5"][0].out_features)) for b in boxes]
        emb = self.embedding_head(self.roi_features(features, boxes, image_sizes))
        return list(emb.split([len(b) for b in boxes]))

    # ------------------------------------------------------------ inference
    def detect(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        query_boxes: list[Tensor] | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections per image: boxes (n, 4), scores (n,), embeddings (n, 256).

        With ``query_boxes`` (one (1, 4) per image) the query box is detection 0
        with score 1.0 and its own embedding; detections overlapping it by more
        than the NMS threshold are suppressed, as in the release.
        """
        nq = [0] * len(proposals) if query_boxes is None else [len(q) for q in query_boxes]
        rois = proposals if query_boxes is None else [torch.cat([p, q.to(p)]) for p, q in zip(proposals, query_boxes)]
        counts = [len(r) for r in rois]
        feat = self.roi_features(features, rois, image_sizes)
        logits, deltas = self.box_predictor(feat)
        embeddings = self.embedding_head(feat)
        scores = F.softmax(logits.float(), dim=-1)[:, 1]
        all_boxes = torch.cat(rois)
        pred = self.box_coder.decode(deltas.float(), [r.float() for r in rois])[:, 1]  # (R, 4) person deltas
        results = []
        for b, s, e, r, size, n_query in zip(
            pred.split(counts), scores.split(counts), embeddings.split(counts), all_boxes.split(counts), image_sizes, nq
        ):
            n_prop = len(r) - n_query
            results.append(self._postprocess_one(b[:n_prop], s[:n_prop], e[:n_prop], size, r[n_prop:], e[n_prop:]))
        return results

    def _postprocess_one(
        self, boxes: Tensor, scores: Tensor, emb: Tensor, size: tuple[int, int], q_boxes: Tensor, q_emb: Tensor
    ) -> dict[str, Tensor]:
        boxes = clip_boxes_to_image(boxes, size)
        keep = torch.where(scores > self.score_thresh)[0]  # strictly above, as the release
        boxes, scores, emb = boxes[keep], scores[keep], emb[keep]
        n_q = len(q_boxes)
        if n_q:
            # query boxes first: NMS rank above every detection (score 2 > any
            # softmax score, even a saturated 1.0), reported with score 1.0
            boxes = torch.cat([q_boxes.to(boxes), boxes])
            emb = torch.cat([q_emb, emb])
            rank = torch.cat([scores.new_full((n_q,), 2.0), scores])
            scores = torch.cat([scores.new_ones(n_q), scores])
        else:
            rank = scores
        keep = nms(boxes, rank, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "embeddings": emb[keep]}


def proposal_losses(
    logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Person/background cross-entropy and smooth-L1 (beta 1) on the person deltas of fg RoIs.

    The regression sum is divided by the number of sampled RoIs, as the release does.
    """
    det_labels = labels.clamp(0, 1)
    loss_cls = F.cross_entropy(at_least_float32(logits), det_labels)
    pos = torch.where(det_labels > 0)[0]
    person_deltas = at_least_float32(deltas).reshape(len(deltas), -1, 4)[pos, 1]
    loss_reg = F.smooth_l1_loss(person_deltas, regression_targets[pos], beta=1.0, reduction="sum") / max(len(labels), 1)
    return loss_cls, loss_reg
