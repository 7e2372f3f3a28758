"""Tiny-backbone model: training step, RoI sampling, inference modes, backbone weights."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torchvision

from oimnet.config import load_config
from oimnet.models import LOSS_KEYS, build_model
from oimnet.models.backbone import build_resnet

logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)


def tiny_config(**extra):
    overrides = {
        "MODEL.BACKBONE.NAME": "tiny",
        "MODEL.LOSS.LUT_SIZE": 10,
        "MODEL.LOSS.CQ_SIZE": 8,
        "MODEL.LOSS.TYPE": "LOIM",
        "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
        "MODEL.ROI_HEAD.AUGMENT": True,
        "MODEL.RPN.ANCHOR_SIZES": [32, 64, 128],
        "MODEL.RPN.PRE_NMS_TOPN_TRAIN": 600,
        "MODEL.RPN.POST_NMS_TOPN_TRAIN": 100,
        "MODEL.RPN.PRE_NMS_TOPN_TEST": 300,
        "MODEL.RPN.POST_NMS_TOPN_TEST": 50,
        "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.0,
        # scene(): the 160 x 208 image keeps its size, the 144 x 192 one is resized x 13/12
        "INPUT.MIN_SIZE": 160,
        "INPUT.MAX_SIZE": 208,
    }
    overrides.update(extra)
    return load_config(None, overrides)


def scene(seed: int = 0):
    """Two small images, each with persons drawn as bright rectangles at their GT boxes."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 160, 208, generator=g) * 0.3, torch.rand(3, 144, 192, generator=g) * 0.3]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 120.0], [100.0, 30.0, 150.0, 140.0]]),
            "labels": torch.tensor([3, 5555]),
        },
        {"boxes": torch.tensor([[60.0, 10.0, 100.0, 110.0]]), "labels": torch.tensor([7])},
    ]
    for img, t in zip(images, targets):
        for x1, y1, x2, y2 in t["boxes"].long().tolist():
            img[:, y1:y2, x1:x2] = 0.9
    return images, targets


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_config())


def test_training_step_gives_five_finite_losses_and_gradients(model):
    images, targets = scene()
    model.train()
    # a non-empty memory, so the re-id loss has a gradient (all-zero LUT/queue give none)
    lut = model.roi_heads.reid_loss.lut
    lut.copy_(torch.nn.functional.normalize(torch.randn(lut.shape), dim=1))
    bn1_mean = model.backbone.bn1.running_mean.clone()
    losses = model(images, targets)
    assert set(losses) == set(LOSS_KEYS)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_box_reid"] > 0  # two labeled persons
    sum(losses.values()).backward()
    for name in (
        "rpn.head.cls_logits.weight",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.embedding_head.projectors.feat_res5.0.weight",
        "backbone.layer1.0.conv1.weight",
        "roi_heads.reid_head.layer4.0.conv1.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # conv1 and bn1's affine parameters frozen; bn1's statistics train (as the release)
    assert model.backbone.conv1.weight.grad is None and not model.backbone.bn1.weight.requires_grad
    assert model.backbone.bn1.training and not torch.equal(model.backbone.bn1.running_mean, bn1_mean)
    assert model.backbone.layer1[0].bn1.training


def test_all_unlabeled_targets_give_zero_reid_loss(model):
    images, targets = scene()
    for t in targets:
        t["labels"] = torch.full_like(t["labels"], 5555)
    model.train()
    losses = model(images, targets)
    assert float(losses["loss_box_reid"].detach()) == 0.0
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_image_without_boxes_trains(model):
    images, targets = scene()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_roi_sampling_labels_ious_and_gt_inclusion(model):
    _, targets = scene()
    heads = model.roi_heads
    gt = targets[0]["boxes"]
    proposals = [
        torch.tensor(
            [
                [10.0, 20.0, 50.0, 110.0],  # IoU 0.9 with GT 0 -> pid 3
                [150.0, 100.0, 200.0, 150.0],  # far from both -> background
                [100.0, 30.0, 150.0, 85.0],
            ]
        )
    ]  # IoU 0.5 with GT 1 -> 5555
    rois = heads.select_training_samples(proposals, targets[:1])
    boxes = rois.boxes[0]
    assert len(boxes) == 5  # 3 proposals + 2 GT boxes, all kept (fewer than 128)
    by_box = {tuple(b.tolist()): (int(lab), float(iou)) for b, lab, iou in zip(boxes, rois.labels, rois.ious)}
    assert by_box[(10.0, 20.0, 50.0, 110.0)] == (3, pytest.approx(0.9))
    assert by_box[(150.0, 100.0, 200.0, 150.0)][0] == 0
    assert by_box[(100.0, 30.0, 150.0, 85.0)] == (5555, pytest.approx(0.5))
    assert by_box[tuple(gt[0].tolist())] == (3, 1.0) and by_box[tuple(gt[1].tolist())] == (5555, 1.0)
    # regression target of an exact GT box is zero
    i = [tuple(b.tolist()) for b in boxes].index(tuple(gt[0].tolist()))
    assert torch.allclose(rois.regression_targets[i], torch.zeros(4), atol=1e-6)


def test_sampling_caps_rois_per_image_and_positive_fraction():
    model = build_model(tiny_config(**{"MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 16}))
    _, targets = scene()
    jitter = torch.randn(200, 4) * 3
    proposals = [
        torch.cat([targets[0]["boxes"][0] + jitter[:100], torch.tensor([[150.0, 100, 200, 150]]) + jitter[100:]])
    ]
    rois = model.roi_heads.select_training_samples(proposals, targets[:1])
    assert len(rois.boxes[0]) == 16 and int((rois.labels > 0).sum()) == 8


def test_bn1_trains_its_statistics_but_not_its_affine_parameters(model):
    # as the release: bn1's weight/bias (and conv1's weight) get no gradients,
    # but bn1 normalizes with batch statistics and updates its running mean/var
    images, targets = scene()
    bn1, conv1 = model.backbone.bn1, model.backbone.conv1
    before = {
        k: v.clone()
        for k, v in {**dict(bn1.named_buffers()), **dict(bn1.named_parameters()), "conv1": conv1.weight}.items()
    }
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    assert bn1.training and not bn1.weight.requires_grad and not bn1.bias.requires_grad
    losses = model(images, targets)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    assert not torch.equal(bn1.running_mean, before["running_mean"])
    assert not torch.equal(bn1.running_var, before["running_var"])
    assert int(bn1.num_batches_tracked) == int(before["num_batches_tracked"]) + 1
    assert torch.equal(bn1.weight, before["weight"]) and torch.equal(bn1.bias, before["bias"])
    assert torch.equal(conv1.weight, before["conv1"])
    model.eval()
    assert not bn1.training


def test_inference_modes(model):
    images, targets = scene()
    model.eval()
    with torch.no_grad():
        dets = model(images)
        queries = [targets[0]["boxes"][1:2], targets[1]["boxes"]]
        qdets = model(images, query_boxes=queries)
        box_emb = model.embed_boxes(images, [t["boxes"] for t in targets])
    for det, img in zip(dets, images):
        n = len(det["boxes"])
        assert 0 < n <= 50 and det["embeddings"].shape == (n, 256)
        assert torch.allclose(det["embeddings"].norm(dim=1), torch.ones(n), atol=1e-5)
        assert (det["boxes"][:, 0::2] >= 0).all() and (det["boxes"][:, 0::2] <= img.shape[2]).all()
        assert (det["boxes"][:, 1::2] >= 0).all() and (det["boxes"][:, 1::2] <= img.shape[1]).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
    for qdet, q, emb, k in zip(qdets, queries, box_emb, (1, 0)):
        # scaled into the resized image and back, as the release does (equal up to rounding)
        torch.testing.assert_close(qdet["boxes"][0], q[0]) and float(qdet["scores"][0]) == 1.0
        # the query's embedding is computed from the box itself
        assert torch.allclose(qdet["embeddings"][0], emb[k], atol=1e-5)
        # nothing kept overlaps the query box beyond the NMS threshold
        iou = torchvision.ops.box_iou(qdet["boxes"][:1], qdet["boxes"][1:])
        assert (iou <= 0.4 + 1e-6).all()
    assert [e.shape for e in box_emb] == [(2, 256), (1, 256)]


def test_score_threshold_and_detection_cap():
    model = build_model(
        tiny_config(**{"MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.5, "MODEL.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST": 3})
    )
    images, _ = scene()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    for det in dets:
        assert len(det["boxes"]) <= 3 and (det["scores"] > 0.5).all()  # strictly above, as the release


def test_norm_types_and_augment_layout():
    none = build_model(tiny_config(**{"MODEL.ROI_HEAD.NORM_TYPE": "none", "MODEL.ROI_HEAD.AUGMENT": False}))
    bn = build_model(tiny_config(**{"MODEL.ROI_HEAD.NORM_TYPE": "batchnorm", "MODEL.ROI_HEAD.AUGMENT": False}))
    keys = lambda m: {k for k in m.state_dict() if "feat_res5" in k}  # noqa: E731
    assert keys(none) == {"roi_heads.embedding_head.projectors.feat_res5.0.weight"}
    assert keys(bn) - keys(none) == {
        f"roi_heads.embedding_head.projectors.feat_res5.1.{s}"
        for s in ("running_mean", "running_var", "num_batches_tracked")
    }
    from oimnet.models.protonorm import ProtoNorm2d

    aug = build_model(tiny_config())
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) and not isinstance(m, ProtoNorm2d)
        for m in aug.roi_heads.reid_head.modules()
    )
    assert any(isinstance(m, ProtoNorm2d) for m in aug.roi_heads.reid_head.modules())
    assert set(aug.state_dict()) == set(build_model(tiny_config(**{"MODEL.ROI_HEAD.AUGMENT": False})).state_dict())


def test_tiny_model_learns_a_fixed_scene():
    torch.manual_seed(0)
    model = build_model(tiny_config(**{"MODEL.ROI_HEAD.AUGMENT": False}))
    images, targets = scene()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.002, momentum=0.9)
    model.train()
    history = []
    for _ in range(12):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert all(math.isfinite(v) for h in history for v in h.values())
    first = {k: sum(h[k] for h in history[:3]) / 3 for k in LOSS_KEYS}
    last = {k: sum(h[k] for h in history[-3:]) / 3 for k in LOSS_KEYS}
    assert last["loss_proposal_cls"] < 0.6 * history[0]["loss_proposal_cls"], (history[0], last)
    assert last["loss_rpn_cls"] < first["loss_rpn_cls"], (first, last)
    assert last["loss_proposal_reg"] < first["loss_proposal_reg"], (first, last)


def test_backbone_weights(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_resnet("resnet18", str(missing))
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    trunk, res5 = build_resnet("resnet18", str(path))
    assert torch.equal(trunk.layer2[1].conv2.weight, ref.layer2[1].conv2.weight)
    assert torch.equal(res5.layer4[0].downsample[0].weight, ref.layer4[0].downsample[0].weight)
    with pytest.raises(ValueError, match="does not fit backbone 'resnet34'"):
        build_resnet("resnet34", str(path))


def test_random_init_warns_once(caplog):
    logger = logging.getLogger("oimnet.models.backbone")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger="oimnet.models.backbone"):
            build_resnet("tiny", "")
    finally:
        logger.setLevel(level)
    lines = [r.getMessage() for r in caplog.records if r.name == "oimnet.models.backbone"]
    assert len(lines) == 1 and "numbers will not match the paper" in lines[0]
