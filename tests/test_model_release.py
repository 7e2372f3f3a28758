"""Release checkpoints: state dicts built from the published key list load strictly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from oimnet.checkpoint import (
    OPTIONAL_KEYS,
    UNUSED_RELEASE_PREFIXES,
    ReleaseCheckpointError,
    check_release_state_dict,
    infer_from_keys,
    load_release_state_dict,
    read_state_dict,
)
from oimnet.config import load_config
from oimnet.models import build_model

VARIANTS = [
    "oimnet/cuhk-sysu",
    "oimnet/prw",
    "oimnet++/cuhk-sysu",
    "oimnet++/prw",
    "oimnet+++/cuhk-sysu",
    "oimnet+++/prw",
]


@pytest.fixture(scope="module")
def release_keys() -> dict:
    # The state-dict keys, shapes and dtypes of the authors' released
    # checkpoints, per variant, kept with the tests.
    path = Path(__file__).resolve().parent / "data" / "upstream_checkpoint_keys.json"
    return json.loads(path.read_text())["variants"]


def variant_config(variant: str, **extra):
    """The config the authors used for a released variant, with tiny test-time proposal counts."""
    method, dataset = variant.split("/")
    prw = dataset == "prw"
    overrides = {
        "MODEL.BACKBONE.NAME": "resnet50",
        "MODEL.LOSS.LUT_SIZE": 482 if prw else 5532,
        "MODEL.LOSS.CQ_SIZE": 500 if prw else 5000,
        "MODEL.LOSS.TYPE": "OIM" if method == "oimnet" else "LOIM",
        "MODEL.ROI_HEAD.NORM_TYPE": "none" if method == "oimnet" else "protonorm",
        "MODEL.ROI_HEAD.AUGMENT": method == "oimnet+++",
        "MODEL.RPN.ANCHOR_SIZES": [8, 16, 32],  # the release's anchors
        "MODEL.RPN.PRE_NMS_TOPN_TEST": 50,
        "MODEL.RPN.POST_NMS_TOPN_TEST": 6,
        "MODEL.ROI_HEAD.SCORE_THRESH_TEST": 0.0,
        "INPUT.MIN_SIZE": 64,  # the test image's size: the model does not resize it
        "INPUT.MAX_SIZE": 96,
    }
    overrides.update(extra)
    return load_config(None, overrides)


def random_state_dict(spec: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the listed shapes/dtypes, scaled so a forward pass stays finite."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, info in spec.items():
        shape, dtype = tuple(info["shape"]), getattr(torch, info["dtype"])
        if dtype == torch.int64:
            out[key] = torch.randint(0, 1000, shape, generator=g, dtype=dtype)
        elif key.endswith("running_var"):
            out[key] = (torch.rand(shape, generator=g) + 0.5).to(dtype)
        else:
            out[key] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    return out


def quiet_build(cfg):
    logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)
    return build_model(cfg)


@pytest.mark.parametrize("variant", VARIANTS)
def test_release_state_dict_loads_and_runs(release_keys, variant):
    spec = release_keys[variant]
    model = quiet_build(variant_config(variant))
    dropped = {k for k in spec if k.startswith(UNUSED_RELEASE_PREFIXES)}
    # our state dict = the release's keys minus never-used modules, plus the queue head
    assert set(model.state_dict()) == (set(spec) - dropped) | set(OPTIONAL_KEYS)
    assert dropped and all(k.startswith(("roi_heads.box_head.", "roi_heads.faster_rcnn_predictor.")) for k in dropped)

    state = random_state_dict(spec)
    model.roi_heads.reid_loss.cq_head.fill_(7)
    report = load_release_state_dict(model, state)
    assert report.ok and sorted(report.dropped) == sorted(dropped)
    assert report.defaulted == list(OPTIONAL_KEYS)
    own = model.state_dict()
    assert int(own["roi_heads.reid_loss.cq_head"]) == 0
    for key in (
        "backbone.layer3.5.conv2.weight",
        "roi_heads.reid_head.layer4.2.bn3.running_var",
        "roi_heads.embedding_head.projectors.feat_res5.0.weight",
        "rpn.head.conv.0.0.weight",
    ):
        assert torch.equal(own[key], state[key].to(own[key].dtype)), key
    assert torch.allclose(own["roi_heads.reid_loss.lut"].float(), state["roi_heads.reid_loss.lut"].float())

    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 96)])
    assert len(out) == 1
    n = len(out[0]["boxes"])
    assert out[0]["boxes"].shape == (n, 4) and out[0]["scores"].shape == (n,)
    assert out[0]["embeddings"].shape == (n, 256)
    assert torch.isfinite(out[0]["embeddings"]).all()


@pytest.fixture(scope="module")
def prw_model_and_state(release_keys):
    variant = "oimnet++/prw"
    return quiet_build(variant_config(variant)), random_state_dict(release_keys[variant], seed=1)


def test_wrong_shape_is_rejected_naming_the_key(prw_model_and_state):
    model, state = prw_model_and_state
    bad = dict(state)
    bad["roi_heads.reid_loss.lut"] = torch.zeros(481, 256, dtype=torch.float16)
    with pytest.raises(
        ReleaseCheckpointError, match=r"roi_heads\.reid_loss\.lut: file \[481, 256\] vs model \[482, 256\]"
    ):
        load_release_state_dict(model, bad)


def test_unexpected_and_missing_keys_are_rejected_naming_them(prw_model_and_state):
    model, state = prw_model_and_state
    bad = dict(state)
    bad["roi_heads.extra_head.weight"] = torch.zeros(3)
    del bad["rpn.head.cls_logits.bias"]
    with pytest.raises(ReleaseCheckpointError) as err:
        load_release_state_dict(model, bad)
    assert "roi_heads.extra_head.weight" in str(err.value)
    assert "rpn.head.cls_logits.bias" in str(err.value)
    report = check_release_state_dict(model, bad)
    assert report.unexpected == ["roi_heads.extra_head.weight"]
    assert report.missing == ["rpn.head.cls_logits.bias"]


def test_norm_mismatch_is_reported(release_keys, prw_model_and_state):
    # OIMNet's release (no norm) into an OIMNet++ model: feat_res5.1 stats are missing
    model, _ = prw_model_and_state
    report = check_release_state_dict(model, random_state_dict(release_keys["oimnet/prw"]))
    assert not report.ok
    assert sorted(report.missing) == [
        "roi_heads.embedding_head.projectors.feat_res5.1.num_batches_tracked",
        "roi_heads.embedding_head.projectors.feat_res5.1.running_mean",
        "roi_heads.embedding_head.projectors.feat_res5.1.running_var",
    ]


def test_infer_from_keys(release_keys):
    info = infer_from_keys(random_state_dict(release_keys["oimnet/cuhk-sysu"]))
    assert info["overrides"] == {
        "MODEL.BACKBONE.NAME": "resnet50",
        "MODEL.ROI_HEAD.NORM_TYPE": "none",
        "MODEL.LOSS.LUT_SIZE": 5532,
        "MODEL.LOSS.CQ_SIZE": 5000,
    }
    info = infer_from_keys(random_state_dict(release_keys["oimnet+++/prw"]))
    assert info["overrides"]["MODEL.ROI_HEAD.NORM_TYPE"] == "protonorm"
    assert (info["overrides"]["MODEL.LOSS.LUT_SIZE"], info["overrides"]["MODEL.LOSS.CQ_SIZE"]) == (482, 500)
    assert any("augment" in n for n in info["notes"])


def test_checkpoint_cli(release_keys, tmp_path, capsys):
    from oimnet.checkpoint import main

    state = random_state_dict(release_keys["oimnet+++/prw"])
    good = tmp_path / "release.pth"
    torch.save({"model": state, "epoch": 19}, good)
    assert read_state_dict(str(good)).keys() == state.keys()
    assert main([str(good)]) == 0
    text = capsys.readouterr().out
    assert "MODEL.LOSS.LUT_SIZE = 482" in text and "protonorm" in text
    assert "AUGMENT: unknown" in text and "result: LOADS" in text

    bad_state = dict(state)
    bad_state["rpn.head.cls_logits.weight"] = torch.zeros(15, 1024, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, bad)  # a bare state dict is accepted too
    assert main([str(bad)]) == 1
    text = capsys.readouterr().out
    assert "rpn.head.cls_logits.weight: file [15, 1024, 1, 1] vs model [9, 1024, 1, 1]" in text
    assert "DOES NOT LOAD" in text
