"""Names and numbers several packages share: one home, imported from here."""

from __future__ import annotations

# Identity of an unlabeled person box (the release's convention): boxes with a
# face/identity unknown still train detection and fill the circular queue.
UNLABELED_PID = 5555

# Values of INPUT.DATASET.
DATASETS = ("CUHK-SYSU", "PRW", "synthetic")

# Values of MODEL.LOSS.TYPE and MODEL.ROI_HEAD.NORM_TYPE.
LOSS_TYPES = ("OIM", "LOIM")
NORM_TYPES = ("none", "batchnorm", "protonorm")

# Scalar metrics of an evaluation, as fractions in [0, 1], copied into MLflow
# and the Ray report: search mAP and top-k, detection AP/recall (all boxes and
# labeled boxes only), PRW's multi-view variant.
SCALAR_METRICS = (
    "mAP",
    "top1",
    "top5",
    "top10",
    "det_ap",
    "det_recall",
    "det_ap_labeled",
    "det_recall_labeled",
    "mAP_multiview",
    "top1_multiview",
)

# The paper's two headline metrics (its tables): search mAP and top-1. Also
# what the final ground-truth-box evaluation logs (as mAP_gt, top1_gt).
HEADLINE_METRICS = ("mAP", "top1")
