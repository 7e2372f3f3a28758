"""The AMP training path (what CUDA runs) exercised on the CPU: autocast, float16 memory, GradScaler.

torch runs autocast on the CPU too (float16 and bfloat16), so the code a GPU
run takes under ``SOLVER.AMP`` -- half activations, the float16 LUT/queue
the release keeps, ProtoNorm's float32 statistics, the loss scaler -- is
checked here against the float32 step on the same batch and weights.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from oimnet.engine.hooks import CheckpointHook, LRScheduleHook
from oimnet.engine.loop import Trainer
from oimnet.engine.lr_schedule import build_scheduler
from oimnet.engine.step import SingleDeviceStep, loss_weights
from oimnet.engine.trainer import build_optimizer
from oimnet.models import LOSS_KEYS, build_model
from oimnet.models.protonorm import ProtoNorm1d, ProtoNorm2d
from tests.test_model_train import scene, tiny_config

# Keys selecting each method (experiments/README.md).
VARIANTS = {
    "OIMNet": {"MODEL.ROI_HEAD.NORM_TYPE": "none", "MODEL.LOSS.TYPE": "OIM", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet+++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.AUGMENT": True},
}
# Tolerances of the AMP step against the float32 one (same batch, same RoIs).
# Measured on this tiny model (largest over the three variants): relative
# loss differences 2.5e-3 (float16) and 3.9e-2 (bfloat16, 8-bit mantissa),
# LUT/queue entries 1.0e-3 and 1.2e-2, gradient cosine 0.9992 and 0.9905
# (float16: 0.9979 since the stem's bn1 normalizes with batch statistics, as
# in the release; 0.9997 with its running statistics).
# The ProtoNorm variants are the least exact: the embedding's batch mean is
# large against its spread, so (x - mean) of a half input loses digits
# (as BatchNorm under AMP), and logits 30 * cos amplify it.
LOSS_RTOL = {torch.float16: 5e-3, torch.bfloat16: 8e-2}
LUT_ATOL = {torch.float16: 3e-3, torch.bfloat16: 3e-2}
GRAD_COSINE = {torch.float16: 0.996, torch.bfloat16: 0.98}
LABELED_IDS = (3, 7)  # the labeled persons of scene(); 5555 is unlabeled


def _config(variant: str, **extra):
    # 16 RoIs per image, 12 proposals: every candidate is sampled, and float16
    # convolution backward on the CPU is slow (no fast kernel): 30-60 s at 128
    return tiny_config(
        **VARIANTS[variant], **{"MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 16, "MODEL.RPN.POST_NMS_TOPN_TRAIN": 12}, **extra
    )


def _model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(_config(variant))
    with torch.no_grad():
        # Objectness independent of the image: an untrained head scores anchors
        # within ~1e-3 of each other, so half rounding would reorder its top-k
        # and the two steps would sample different RoIs.  Deltas stay random.
        cls = model.rpn.head.cls_logits
        cls.weight.zero_()
        cls.bias.copy_(torch.linspace(-1.0, 1.0, cls.bias.numel()))
    reid = model.roi_heads.reid_loss
    # a non-empty memory, so that the re-id loss has a gradient
    reid.lut.copy_(F.normalize(torch.randn(reid.lut.shape, generator=torch.Generator().manual_seed(3)), dim=1))
    return model.train()


def _half_memory(model: torch.nn.Module) -> torch.nn.Module:
    """The LUT and queue in float16, as the release (and our trainer) keeps them under AMP."""
    reid = model.roi_heads.reid_loss
    reid.lut, reid.cq = reid.lut.half(), reid.cq.half()
    return model


def _step(model, amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None = None, seed: int = 1):
    """One forward/backward on scene() (autocast when amp_dtype); returns the float32 losses (unweighted)."""
    images, targets = scene()
    torch.manual_seed(seed)  # the RoI samplers draw from the global generator
    with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        losses = model(images, targets)
    losses = {k: v.float() for k, v in losses.items()}
    total = sum(losses.values())
    (scaler.scale(total) if scaler is not None else total).backward()
    return losses


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@functools.cache
def _float32_step(variant: str):
    """(model before the step, model after it, its losses, its gradient) of the float32 step; computed once per variant."""
    before = _model(variant)
    after = copy.deepcopy(before)
    losses = _step(after, None)
    return before, after, losses, _flat_grad(after)


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_amp_step_matches_float32(variant, amp_dtype):
    """Autocast + float16 memory: finite losses near float32's, the memory updated alike, the same gradient direction."""
    start, reference, want, g_ref = _float32_step(variant)
    amp = _half_memory(copy.deepcopy(start))
    lut_before = amp.roi_heads.reid_loss.lut.float().clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    got = _step(amp, amp_dtype, scaler)
    assert set(got) == set(LOSS_KEYS)
    for key in LOSS_KEYS:
        assert torch.isfinite(got[key]), (key, got[key])
        torch.testing.assert_close(
            got[key], want[key], rtol=LOSS_RTOL[amp_dtype], atol=1e-4, msg=lambda m, key=key: f"{key}: {m}"
        )
    assert got["loss_box_reid"] > 0

    reid, ref_reid = amp.roi_heads.reid_loss, reference.roi_heads.reid_loss
    assert reid.lut.dtype == torch.float16 and reid.cq.dtype == torch.float16
    rows = [i - 1 for i in LABELED_IDS]
    assert (reid.lut.float()[rows] - lut_before[rows]).abs().amax(1).min() > 0.05, "labeled rows not updated"
    torch.testing.assert_close(
        torch.linalg.vector_norm(reid.lut.float()[rows], dim=1), torch.ones(2), atol=2e-3, rtol=0
    )
    others = [i for i in range(reid.lut.shape[0]) if i not in rows]
    assert torch.equal(reid.lut.float()[others], lut_before[others])
    torch.testing.assert_close(reid.lut.float(), ref_reid.lut, atol=LUT_ATOL[amp_dtype], rtol=0)
    assert int(reid.cq_head) == int(ref_reid.cq_head) > 0  # unlabeled RoIs entered the queue
    written = int(reid.cq_head)
    assert reid.cq.float()[:written].abs().sum() > 0
    torch.testing.assert_close(reid.cq.float()[:written], ref_reid.cq[:written], atol=LUT_ATOL[amp_dtype], rtol=0)

    assert scaler.get_scale() == 2.0**10
    scaler.unscale_(torch.optim.SGD(amp.parameters(), lr=0.0))
    g_amp = _flat_grad(amp)
    assert torch.isfinite(g_amp).all()
    assert F.cosine_similarity(g_amp, g_ref, dim=0) > GRAD_COSINE[amp_dtype]


def _amp_trainer(out_dir, scaler_state: dict | None = None, resume: dict | None = None, epochs: int = 1) -> Trainer:
    """The engine's loop with its AMP step strategy on the CPU: one batch (scene()) per epoch, checkpoint every epoch."""
    cfg = _config("OIMNet++", **{"SOLVER.MAX_EPOCHS": epochs})
    model = _model("OIMNet++")
    optimizer = build_optimizer(model, cfg)
    strategy = SingleDeviceStep(model, optimizer, torch.device("cpu"), loss_weights(cfg.SOLVER), clip=10.0, amp=True)
    assert strategy.scaler.is_enabled() and model.roi_heads.reid_loss.lut.dtype == torch.float16
    strategy.load_state_dict(scaler_state)
    trainer = Trainer(
        cfg, model, optimizer, build_scheduler(optimizer, cfg, 1), DataLoader([scene()], batch_size=None), strategy,
        device=torch.device("cpu"), out_dir=out_dir, seed=1,
    )  # fmt: skip
    trainer.register_hooks([LRScheduleHook(), CheckpointHook(1)])
    if resume is not None:
        trainer.resume_from(resume)
    return trainer


def test_grad_scaler_skips_an_overflowing_step_and_resume_restores_its_state(tmp_path):
    """The trainer's AMP step with a scale so large that half gradients overflow: the update is skipped
    and the scale halved; the checkpoint carries the scaler's state and a resumed run continues from it."""
    huge = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=3).state_dict()
    first = _amp_trainer(tmp_path, scaler_state=huge)
    before = {k: v.detach().clone() for k, v in first.model.named_parameters()}
    lut_before = first.model.roi_heads.reid_loss.lut.clone()
    first.train()
    grads = [p.grad for p in first.model.parameters() if p.grad is not None]
    assert any(not torch.isfinite(g).all() for g in grads), "expected the scaled half gradients to overflow"
    assert all(torch.isfinite(torch.tensor(v)) for v in first.step_output.values())  # the losses themselves are finite
    assert all(torch.equal(p, before[k]) for k, p in first.model.named_parameters()), "an inf step was applied"
    assert not first.optimizer.state, "the skipped step created momentum buffers"
    # the memory is updated in the forward pass, skipped step or not (as the release)
    assert not torch.equal(first.model.roi_heads.reid_loss.lut, lut_before)
    scaler = first.strategy.scaler
    assert scaler.get_scale() == 2.0**39 and scaler._get_growth_tracker() == 0

    checkpoint = tmp_path / "epoch_001.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**39 and state["scaler"]["growth_interval"] == 3
    assert state["model"]["roi_heads.reid_loss.lut"].dtype == torch.float16

    second = _amp_trainer(tmp_path, resume=state, epochs=2)
    restored = second.strategy.scaler
    assert (restored.get_scale(), restored.get_growth_interval()) == (2.0**39, 3)
    assert torch.equal(second.model.roi_heads.reid_loss.lut, first.model.roi_heads.reid_loss.lut)
    assert second.start_epoch == 1 and second.global_step == 1
    # a sane scale from here on: the next step is applied, and its growth tracker counts it
    second.strategy.load_state_dict({**state["scaler"], "scale": 2.0**10})
    second.train()
    assert restored.get_scale() == 2.0**10 and restored._get_growth_tracker() == 1
    changed = [k for k, p in second.model.named_parameters() if not torch.equal(p, before[k])]
    assert "roi_heads.embedding_head.projectors.feat_res5.0.weight" in changed
    assert torch.load(tmp_path / "epoch_002.pth", weights_only=True)["scaler"]["scale"] == 2.0**10


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("module,shape", [(ProtoNorm1d, (40, 6)), (ProtoNorm2d, (16, 4, 3, 3))])
def test_protonorm_statistics_in_float32_under_autocast(module, shape, amp_dtype):
    """Under autocast the prototype mean is not computed in half: same output and statistics as a float32 call on the same input."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(*shape, generator=g) * 4 + 30).to(amp_dtype)  # large offset: a half mean would be off
    labels = torch.tensor([0, 0, 3, 3, 3, 5555, 5555, 8] * (shape[0] // 8))
    inside, outside = module(shape[1]), module(shape[1])
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=amp_dtype):
        ya = inside(xa, labels)
    yb = outside(xb, labels)
    assert ya.dtype == amp_dtype
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(inside.running_mean, outside.running_mean)
    torch.testing.assert_close(inside.running_var, outside.running_var)
    grad = torch.randn(ya.shape, generator=g).to(amp_dtype)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad)
