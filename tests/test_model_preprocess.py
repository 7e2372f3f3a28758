"""The model's preprocessing is the authors' release's: torchvision's
GeneralizedRCNNTransform (normalize, resize, pad to 32, boxes per axis) on
original-size images, and detections mapped back per axis.

Each check compares the model with a GeneralizedRCNNTransform built here
from the release's arguments, bitwise, and the resize with the rule it
implements (F.interpolate, scale = min(MIN / short, MAX / long), size
rounded down).
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from oimnet.config import load_config
from oimnet.models import build_model

logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def release_transform(min_size: int, max_size: int) -> GeneralizedRCNNTransform:
    """The release's transform (models/base.py of the authors' code)."""
    return GeneralizedRCNNTransform(min_size=min_size, max_size=max_size, image_mean=MEAN, image_std=STD)


def tiny(min_size: int, max_size: int, **extra):
    torch.manual_seed(0)
    return build_model(
        load_config(
            None,
            {
                "MODEL.BACKBONE.NAME": "tiny",
                "MODEL.LOSS.LUT_SIZE": 10,
                "MODEL.LOSS.CQ_SIZE": 8,
                "MODEL.RPN.ANCHOR_SIZES": [8, 16, 32],
                "MODEL.RPN.POST_NMS_TOPN_TEST": 40,
                "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.0,
                "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
                "INPUT.MIN_SIZE": min_size,
                "INPUT.MAX_SIZE": max_size,
                **extra,
            },
        )
    )


def image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth image in [0, 1] with 1/255 steps, like a decoded JPEG."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, max(h // 8, 2), max(w // 8, 2)), generator=g).float()
    return (F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].round() / 255.0).contiguous()


def boxes_for(h: int, w: int) -> torch.Tensor:
    return torch.tensor(
        [[0.1 * w, 0.2 * h, 0.3 * w, 0.9 * h], [0.55 * w, 0.05 * h, 0.7 * w, 0.5 * h], [1.0, 2.0, w - 3.0, h - 1.0]]
    )


def assert_same_as_release(model, images, boxes, min_size, max_size):
    ref = release_transform(min_size, max_size).train(model.training)
    batch, out_boxes, original = model.preprocess(images, boxes)
    ref_batch, ref_targets = ref([im.clone() for im in images], [{"boxes": b.clone()} for b in boxes])
    assert torch.equal(batch.tensors, ref_batch.tensors)
    assert batch.image_sizes == ref_batch.image_sizes
    for b, t in zip(out_boxes, ref_targets):
        assert torch.equal(b, t["boxes"])
    assert original == [tuple(im.shape[-2:]) for im in images]
    return batch, out_boxes


def rule(img: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """The documented resize rule, written out: normalize, then bilinear by the scale, size floored."""
    scale = min(min_size / min(img.shape[-2:]), max_size / max(img.shape[-2:]))
    norm = (img - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return F.interpolate(
        norm[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]


@pytest.mark.parametrize("train", [False, True])
def test_prw_like_downscale(train):
    model = tiny(900, 1500).train(train)
    img = image(1080, 1920, seed=1)
    batch, boxes = assert_same_as_release(model, [img], [boxes_for(1080, 1920)], 900, 1500)
    assert batch.image_sizes == [(843, 1500)]  # rounded down, not 844
    assert tuple(batch.tensors.shape) == (1, 3, 864, 1504)  # padded to a multiple of 32
    assert torch.equal(batch.tensors[0, :, :843, :1500], rule(img, 900, 1500))
    assert (
        float(batch.tensors[0, :, 843:].abs().sum()) == 0.0 and float(batch.tensors[0, :, :, 1500:].abs().sum()) == 0.0
    )
    # boxes scaled per axis: rows by 843/1080, columns by 1500/1920
    expected = boxes_for(1080, 1920) * torch.tensor([1500 / 1920, 843 / 1080, 1500 / 1920, 843 / 1080])
    torch.testing.assert_close(boxes[0], expected)


def test_cuhk_like_upscale():
    model = tiny(900, 1500).eval()
    img = image(600, 800, seed=2)
    batch, _ = assert_same_as_release(model, [img], [boxes_for(600, 800)], 900, 1500)
    assert batch.image_sizes == [(900, 1200)] and tuple(batch.tensors.shape) == (1, 3, 928, 1216)
    assert torch.equal(batch.tensors[0, :, :900, :1200], rule(img, 900, 1500))


def test_batch_of_two_sizes():
    model = tiny(900, 1500).train()
    images = [image(1080, 1920, seed=3), image(450, 600, seed=4)]
    batch, _ = assert_same_as_release(model, images, [boxes_for(1080, 1920), boxes_for(450, 600)], 900, 1500)
    assert batch.image_sizes == [(843, 1500), (900, 1200)]
    assert tuple(batch.tensors.shape) == (2, 3, 928, 1504)


def test_rejects_non_float_images_naming_them():
    model = tiny(90, 150)
    with pytest.raises(ValueError, match=r"images\[1\]: expected a 3 x H x W float tensor"):
        model.preprocess([image(60, 80, 0), torch.zeros(3, 60, 80, dtype=torch.uint8)])


@torch.no_grad()
def test_detections_and_embeddings_mapped_back_as_the_release():
    """model(...) = release transform -> backbone -> RPN -> RoI heads -> release postprocess."""
    model = tiny(90, 150).eval()
    images = [image(108, 192, seed=5), image(60, 80, seed=6)]  # a downscale and an upscale in one batch
    queries = [boxes_for(108, 192)[:1], boxes_for(60, 80)[2:]]
    ref = release_transform(90, 150).eval()

    def by_hand(query_boxes=None):
        targets = None if query_boxes is None else [{"boxes": q} for q in query_boxes]
        batch, targets = ref(list(images), targets)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        dets = model.roi_heads.detect(
            features, proposals, batch.image_sizes, None if targets is None else [t["boxes"] for t in targets]
        )
        return ref.postprocess(dets, batch.image_sizes, [tuple(im.shape[-2:]) for im in images])

    for got, want in ((model(images), by_hand()), (model(images, query_boxes=queries), by_hand(queries))):
        for g, w in zip(got, want):
            assert len(g["boxes"]) > 0
            for key in ("boxes", "scores", "embeddings"):
                assert torch.equal(g[key], w[key]), key
    # detections are in original pixels: inside each original image
    for det, img in zip(model(images), images):
        assert (det["boxes"][:, 2] <= img.shape[2] + 1e-4).all() and (det["boxes"][:, 3] <= img.shape[1] + 1e-4).all()
    # given boxes are embedded from the boxes scaled into the resized image
    batch, targets = ref(list(images), [{"boxes": q} for q in queries])
    want = model.roi_heads.embed(model.backbone(batch.tensors), [t["boxes"] for t in targets], batch.image_sizes)
    for g, w in zip(model.embed_boxes(images, queries), want):
        assert torch.equal(g, w)
