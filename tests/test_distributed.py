"""Synchronised OIM/LOIM memory, ProtoNorm and BatchNorm on 2 gloo CPU processes equal one process on the whole batch."""

import pytest
import torch

from oimnet.distributed import (
    all_gather_rows,
    assert_same_across_ranks,
    gather_counts,
    get_rank,
    get_world_size,
    is_distributed,
)
from tests import distributed_workers as dw

TOL = dict(atol=1e-5, rtol=1e-5)


def test_helpers_without_process_group_are_one_process():
    assert not is_distributed() and get_rank() == 0 and get_world_size() == 1
    x = torch.randn(4, 3)
    every, counts = all_gather_rows(x)
    assert torch.equal(every, x) and counts == [4] and gather_counts(4) == [4]
    assert assert_same_across_ranks([x], "x") == assert_same_across_ranks([x.clone()], "x")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return dw.run_on_ranks("pieces_worker", 2, tmp_path_factory.mktemp("pieces"), True)


def test_sync_batchnorm_conversion_keeps_the_optimizer_s_parameters(tmp_path):
    # The trainer builds its optimizer on the plain model, then wraps it for N ranks:
    # the synchronised norms must hold the same parameter objects, or their weights never move.
    from oimnet.engine.trainer import build_optimizer
    from oimnet.models import build_model
    from oimnet.models.sync_norm import GlooSyncBatchNorm, convert_sync_batchnorm
    from tests.smoke import smoke_config

    model = build_model(smoke_config(tmp_path, tmp_path / "data", **{"MODEL.ROI_HEAD.NORM_TYPE": "batchnorm"}))
    opt = build_optimizer(model, smoke_config(tmp_path, tmp_path / "data"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convert_sync_batchnorm(model)
    synced = [m for m in model.modules() if isinstance(m, GlooSyncBatchNorm)]
    assert len(synced) > 10 and any(m.weight.requires_grad for m in synced)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in model.parameters() if p.requires_grad)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_all_gather_rows_uneven_counts_and_digest_mismatch(two_ranks):
    ranks = [{k[len("gather/") :]: v for k, v in res.items() if k.startswith("gather/")} for res in two_ranks]
    for r, res in enumerate(ranks):
        assert int(res["rank"]) == r and int(res["world"]) == 2
        assert res["counts"].tolist() == [3, 0]
        assert torch.equal(res["every"], torch.arange(6, dtype=torch.float32).view(3, 2))
        assert bool(res["mismatch_raised"])


@pytest.fixture(params=["OIM", "LOIM"])
def two_ranks_vs_one(request, two_ranks):
    loss_type = request.param
    prefix = f"{loss_type}/"
    ranks = [{k[len(prefix) :]: v for k, v in res.items() if k.startswith(prefix)} for res in two_ranks]
    return loss_type, ranks, dw.run_pieces(None, 1, loss_type, False)


def _split_rows(ranks, key):
    return torch.cat([ranks[r][key] for r in range(len(ranks))])


def test_losses_gradients_and_buffers_equal_one_process(two_ranks_vs_one):
    loss_type, ranks, ref = two_ranks_vs_one
    per_row = {"y1", "y2", "y3"}
    checked = 0
    for key, want in ref.items():
        if key.split("/")[1] in per_row:  # outputs: each rank holds its rows
            torch.testing.assert_close(_split_rows(ranks, key), want, **TOL, msg=f"{loss_type} {key}")
        else:  # losses (ranks' mean), reduced gradients and buffers: equal on every rank
            for r, res in enumerate(ranks):
                torch.testing.assert_close(
                    res[key], want, **TOL, msg=lambda m, k=key, r=r: f"{loss_type} rank {r} {k}: {m}"
                )
        checked += 1
    assert set(ranks[0]) == set(ref)
    # What the comparison covered: every parameter's gradient at every step, the memory and the running stats.
    assert any("/grad/pn2d.weight" in k for k in ref) and any("/grad/bn2d.weight" in k for k in ref)
    assert {f"{s}/buf/loss.cq_head" for s in range(dw.STEPS)} <= set(ref)
    assert checked > 50


def test_memory_moves_and_queue_wraps(two_ranks_vs_one):
    """The fixed batch exercises the update: LUT rows change every step, the queue wraps (head by the global count)."""
    _, ranks, ref = two_ranks_vs_one
    heads = [int(ref[f"{s}/buf/loss.cq_head"]) for s in range(dw.STEPS)]
    unlabeled = [int((dw.step_batch(s)["labels"] == dw.UNLABELED).sum()) for s in range(dw.STEPS)]
    expected, head = [], 0
    for u in unlabeled:
        head = (head + u) % dw.CQ_SIZE
        expected.append(head)
    assert heads == expected and sum(unlabeled) > dw.CQ_SIZE
    assert not torch.equal(ref["0/buf/loss.lut"], ref["2/buf/loss.lut"])
    assert all(int(res["2/buf/loss.cq_head"]) == heads[-1] for res in ranks)


@pytest.fixture(scope="module")
def detector_two_ranks(tmp_path_factory):
    return dw.run_on_ranks("detector_worker", 2, tmp_path_factory.mktemp("detector"))


# float64 on both sides: measured differences <= 1e-12 (3 steps, all variants). The
# RPN objectness loss is float32 even there (torchvision's float32 labels make
# binary_cross_entropy_with_logits return float32): its value agrees to a float32 ulp.
TOL64 = dict(atol=1e-10, rtol=1e-10)
TOL64_FLOAT32_LOSS = dict(atol=1e-6, rtol=1e-6)


def _ranks_of(results, prefix):
    return [{k[len(prefix) :]: v for k, v in res.items() if k.startswith(prefix)} for res in results]


@pytest.mark.parametrize("variant", list(dw.VARIANTS))
def test_detector_steps_on_two_ranks_equal_one_process(variant, detector_two_ranks):
    """3 SGD steps in float64, 4 images split 2 + 2 under DDP vs one process on all 4, bn1 training its statistics.

    Losses, every parameter's gradient after reduction, LUT, queue, head,
    ProtoNorm and BatchNorm (bn1 included) running statistics.
    """
    ref = dw.train_detector(None, 1, variant, "float64", dw.STEPS)
    for r, got in enumerate(_ranks_of(detector_two_ranks, f"{variant}/float64/")):
        assert set(got) == set(ref), f"rank {r}: {sorted(set(got) ^ set(ref))[:5]}"
        for key, want in ref.items():
            tol = TOL64_FLOAT32_LOSS if key.endswith("/loss/loss_rpn_cls") else TOL64
            torch.testing.assert_close(got[key], want, **tol, msg=lambda m, k=key, r=r: f"{variant} rank {r} {k}: {m}")
    keys = set(ref)
    assert ref["0/buf/roi_heads.reid_loss.lut"].dtype == torch.float64
    assert "2/buf/roi_heads.reid_loss.cq_head" in keys and "2/buf/roi_heads.reid_loss.lut" in keys
    assert any(k.startswith("2/grad/backbone.") for k in keys) and any("running_var" in k for k in keys)
    assert not torch.equal(ref["0/buf/backbone.bn1.running_mean"], ref["2/buf/backbone.bn1.running_mean"])
    if variant == "OIMNet+++":  # ProtoNorm2d in res5 and ProtoNorm1d on the embedding
        assert any(k.startswith("2/buf/roi_heads.reid_head.") and k.endswith("running_mean") for k in keys)
    assert not torch.equal(ref["0/buf/roi_heads.reid_loss.lut"], ref["2/buf/roi_heads.reid_loss.lut"])


@pytest.mark.parametrize("variant", list(dw.VARIANTS))
def test_detector_float32_first_step_forward_equals_one_process(variant, detector_two_ranks):
    """float32, step 1: losses, memory and running statistics (forward quantities) to 1e-5.

    Gradients are not compared in float32: a ReLU input within rounding of 0
    (one in ~10^6 in the res5 head here) turns its gradient on or off, and a
    one-ulp change of bn1's output alone, in one process, moves a res5 weight
    gradient by 5e-3 relative; that is a property of float32, not of the
    synchronisation, which the float64 test checks exactly.
    """
    ref = dw.train_detector(None, 1, variant, "float32", 1)
    for r, got in enumerate(_ranks_of(detector_two_ranks, f"{variant}/float32/")):
        assert set(got) == set(ref)
        for key, want in ref.items():
            if "/grad/" not in key:
                torch.testing.assert_close(
                    got[key], want, **TOL, msg=lambda m, k=key, r=r: f"{variant} rank {r} {k}: {m}"
                )
    assert "0/buf/backbone.bn1.running_var" in ref and "0/loss/loss_box_reid" in ref


def test_mixed_image_sizes_pad_to_one_canvas_over_the_ranks(detector_two_ranks):
    """Rank 0 holds two 128 x 160 images, rank 1 a 160 x 128 and a 128 x 128 one: both pad to 160 x 160.

    With its own canvas each rank's padded zeros would shift every backbone
    BatchNorm's statistics; with the common one the first step's losses,
    memory and running statistics equal one process's (float32, 1e-5).
    """
    ref = dw.train_detector(None, 1, "OIMNet", "float32", 1, mixed=True)
    assert ref["0/canvas"].tolist() == [160, 160]
    for r, got in enumerate(_ranks_of(detector_two_ranks, "mixed/")):
        assert got["0/canvas"].tolist() == [160, 160], f"rank {r}"
        for key, want in ref.items():
            if "/grad/" not in key:
                torch.testing.assert_close(got[key], want, **TOL, msg=lambda m, k=key, r=r: f"rank {r} {k}: {m}")
    assert "0/buf/backbone.bn1.running_var" in ref


def test_common_canvas_transform_pads_like_torchvision_in_one_process():
    from oimnet.models import build_model
    from oimnet.models.canvas import CommonCanvasTransform, use_common_canvas

    model = build_model(dw.tiny_detector_config("OIMNet")).train()
    plain = model.transform
    use_common_canvas(model)
    assert isinstance(model.transform, CommonCanvasTransform) and model.transform.training
    images = [torch.rand(3, h, w) for h, w in dw.MIXED_SIZES[1:]]
    for mode in (True, False):
        model.transform.train(mode)
        plain.train(mode)
        got, want = model.transform(images)[0], plain(images)[0]
        assert torch.equal(got.tensors, want.tensors) and got.image_sizes == want.image_sizes
    assert tuple(got.tensors.shape[-2:]) == (160, 160)


def test_epoch_batches_of_two_ranks_are_the_one_process_batches():
    from oimnet.data import EpochBatchSampler
    from oimnet.data.records import DatasetError

    indices = list(range(3, 26))
    one = EpochBatchSampler(indices, 4, seed=5)
    ranks = [EpochBatchSampler(indices, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 3):
        one.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        together = [a + b for a, b in zip(*[list(s) for s in ranks])]
        assert together == list(one) and len(together) == len(one) == 5
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        EpochBatchSampler(indices[:3], 2, seed=5, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        EpochBatchSampler(indices, 2, seed=5, rank=2, world_size=2)


@pytest.mark.slow
def test_two_worker_run_resumed_on_one_worker_continues_with_the_same_memory(tmp_path):
    """train_run on 2 gloo ranks (2 epochs) vs its epoch-1 checkpoint resumed on 1 worker with 2x the batch.

    The first resumed step equals the 2-worker run's (losses, LUT, queue,
    head, running statistics, 1e-5); rank 0 alone wrote the files.
    """
    import shutil

    from oimnet.engine.trainer import train_run

    data = tmp_path / "prw"
    both = tmp_path / "two"
    ranks = dw.run_on_ranks("train_run_worker", 2, tmp_path / "ranks", str(both), str(data), {"SOLVER.MAX_EPOCHS": 2})
    assert sorted(p.name for p in both.glob("epoch_*.pth")) == ["epoch_001.pth", "epoch_002.pth"]
    assert sum("step 1 epoch 1" in line for line in (both / "train.log").read_text().splitlines()) == 1
    steps_per_epoch = max(int(k.split("/")[0]) for k in ranks[0]) // 2
    for key, want in ranks[0].items():  # the ranks' memories are identical (the checkpoint digest check passed too)
        assert torch.equal(ranks[1][key], want), key

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(both / "epoch_001.pth", one / "epoch_001.pth")
    cfg = dw.run_config(
        str(one), str(data), **{"SOLVER.MAX_EPOCHS": 2, "INPUT.BATCH_SIZE_TRAIN": 4, "SOLVER.KEYED_SAMPLING": True}
    )
    probe = dw.memory_probe()
    train_run(cfg, resume=True, track=False, hooks=[probe])
    first = steps_per_epoch + 1
    resumed = {k: v for k, v in probe.records.items() if k.startswith(f"{first}/")}
    assert resumed and any(k.endswith("reid_loss.lut") for k in resumed) and any("running_var" in k for k in resumed)
    for key, got in resumed.items():
        torch.testing.assert_close(got, ranks[0][key], **TOL, msg=lambda m, k=key: f"{k}: {m}")
    before = dw.memory_of(both / "epoch_001.pth")["roi_heads.reid_loss.lut"]
    assert not torch.equal(before, resumed[f"{first}/buf/roi_heads.reid_loss.lut"])
