"""OIM / LOIM loss and vectorized memory update against the per-RoI oracle."""

import pytest
import torch
import torch.nn.functional as F

from oimnet.losses import OIMLoss, push_queue_, update_lut_
from tests.reference_losses import UNLABELED, reference_oim_loss, sequential_memory_update

C = 16


def _unit(n, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, C, generator=g, dtype=dtype), dim=1)


def _loss(loss_type="OIM", num_pids=7, cq=5, **kw):
    m = OIMLoss(num_features=C, num_pids=num_pids, num_cq_size=cq, loss_type=loss_type, **kw)
    with torch.no_grad():  # start from a non-trivial memory (the first batch sees zeros)
        m.lut.copy_(_unit(num_pids, seed=11)[:, :C].to(m.lut.dtype))
        m.cq.copy_(_unit(cq, seed=12).to(m.cq.dtype))
    return m


def _check_against_oracle(m, x, labels, ious=None, atol=1e-5):
    lut0, cq0, head0 = m.lut.clone(), m.cq.clone(), int(m.cq_head)
    expected_loss = reference_oim_loss(x, labels, lut0, cq0, m.oim_scalar)
    loss = m(x, labels, ious)
    lut1, cq1, head1 = sequential_memory_update(lut0, cq0, head0, x, labels, m.loss_type, m.momentum, ious, m.eps)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.lut, lut1, atol=atol, rtol=0)
    torch.testing.assert_close(m.cq, cq1, atol=0, rtol=0)
    assert int(m.cq_head) == head1
    return loss


@pytest.mark.parametrize("loss_type", ["OIM", "LOIM"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_duplicates_match_sequential_update(loss_type, seed):
    g = torch.Generator().manual_seed(seed)
    n = 60
    # few ids, so most labeled ids repeat several times in the batch
    choices = torch.tensor([0, 1, 2, 3, 3, 5, 7, UNLABELED, 9999])
    labels = choices[torch.randint(0, len(choices), (n,), generator=g)]
    ious = torch.rand(n, generator=g) * 0.6 + 0.4  # below 0.7 and above 0.9 get clamped
    m = _loss(loss_type, num_pids=7, cq=40)
    x = _unit(n, seed=100 + seed)
    for _ in range(2):  # second batch starts from the updated memory
        _check_against_oracle(m, x, labels, ious)
        x = _unit(n, seed=200 + seed)
    assert (labels.bincount()[1:8] > 2).sum() >= 2  # the case really has repeated ids


def test_queue_wraps_last_writes_win():
    m = _loss("OIM", num_pids=3, cq=4)
    m.cq_head.fill_(3)
    labels = torch.tensor([UNLABELED, 1, UNLABELED, UNLABELED, 0, UNLABELED, 4, UNLABELED, UNLABELED, 2, 10])
    x = _unit(len(labels), seed=5)
    _check_against_oracle(m, x, labels)
    # labels > num_pids (4, 10) are unlabeled too: 8 unlabeled into 4 slots from
    # head 3, so the last four (RoIs 6, 7, 8, 10) end in slots 3, 0, 1, 2
    torch.testing.assert_close(m.cq, x[[7, 8, 10, 6]])
    assert int(m.cq_head) == (3 + 8) % 4


def test_all_unlabeled_batch_loss_zero_and_queue_filled():
    m = _loss("LOIM", num_pids=3, cq=6)
    labels = torch.tensor([UNLABELED, 0, UNLABELED, UNLABELED])
    x = _unit(4, seed=3).requires_grad_()
    lut_before = m.lut.clone()
    loss = _check_against_oracle(m, x, labels, ious=torch.full((4,), 0.8))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(m.lut, lut_before)
    torch.testing.assert_close(m.cq[:3], x.detach()[[0, 2, 3]])
    assert int(m.cq_head) == 3


def test_all_background_batch_changes_nothing():
    m = _loss("OIM")
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x = _unit(5, seed=4).requires_grad_()
    loss = m(x, torch.zeros(5, dtype=torch.int64))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_first_batch_from_zero_memory():
    m = OIMLoss(num_features=C, num_pids=4, num_cq_size=3)
    labels = torch.tensor([2, 2, UNLABELED, 4, 2])
    x = _unit(5, seed=6)
    loss = m(x, labels)
    torch.testing.assert_close(loss, torch.tensor(float(torch.log(torch.tensor(7.0)))))  # all logits 0
    lut, _, _ = sequential_memory_update(torch.zeros(4, C), torch.zeros(3, C), 0, x, labels)
    torch.testing.assert_close(m.lut, lut, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.lut[1].norm(), torch.tensor(1.0))


def test_gradient_uses_pre_update_memory():
    m = _loss("OIM")
    labels = torch.tensor([1, 1, 3, UNLABELED])
    x = _unit(4, seed=7).requires_grad_()
    memory = torch.cat([m.lut, m.cq]).clone()
    m(x, labels).backward()
    xr = x.detach().clone().requires_grad_()
    reference_oim_loss(xr, labels, memory[:7], memory[7:], 30.0).backward()
    torch.testing.assert_close(x.grad, xr.grad)


def test_gradcheck_double():
    m = _loss("LOIM", memory_dtype=torch.float64).eval()  # eval: no memory update between evaluations
    labels = torch.tensor([1, 0, 3, 3, UNLABELED, 6])
    ious = torch.rand(6, dtype=torch.float64)
    x = _unit(6, dtype=torch.float64, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: m(v, labels, ious), (x,))


def test_eval_mode_does_not_update():
    m = _loss("OIM").eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m(_unit(3, seed=9), torch.tensor([1, UNLABELED, 2]))
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_half_buffers_compute_in_float32():
    m = _loss("OIM", memory_dtype=torch.float16)
    labels = torch.tensor([1, 1, 2, UNLABELED])
    x = _unit(4, seed=10)
    lut0, cq0 = m.lut.float(), m.cq.float()
    loss = m(x, labels)
    assert loss.dtype == torch.float32 and m.lut.dtype == torch.float16 and m.cq.dtype == torch.float16
    lut1, cq1, _ = sequential_memory_update(lut0, cq0, 0, x, labels)
    torch.testing.assert_close(m.lut.float(), lut1, atol=1e-3, rtol=0)
    torch.testing.assert_close(m.cq.float(), cq1, atol=1e-3, rtol=0)
    assert OIMLoss(C, 3, 2).half().lut.dtype == torch.float16


def test_release_state_dict_loads_strictly():
    """Release files hold float16 lut/cq and no cq_head."""
    release = {"lut": _unit(7, seed=1).half(), "cq": _unit(5, seed=2).half()}
    m = OIMLoss(num_features=C, num_pids=7, num_cq_size=5)
    m.cq_head.fill_(3)
    m.load_state_dict(release, strict=True)
    assert m.lut.dtype == torch.float32 and int(m.cq_head) == 0
    torch.testing.assert_close(m.lut, release["lut"].float())
    assert set(m.state_dict()) == {"lut", "cq", "cq_head"}
    # and the other way round: our float32 state into float16 buffers, head kept
    m.cq_head.fill_(4)
    h = OIMLoss(num_features=C, num_pids=7, num_cq_size=5, memory_dtype=torch.float16)
    h.load_state_dict(m.state_dict(), strict=True, assign=True)
    assert h.lut.dtype == torch.float16 and int(h.cq_head) == 4
    with pytest.raises(RuntimeError, match="size mismatch"):
        OIMLoss(num_features=C, num_pids=8, num_cq_size=5).load_state_dict(release)


def test_bad_input_errors():
    m = _loss("LOIM")
    with pytest.raises(ValueError, match="needs ious"):
        m(_unit(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"inputs \(2, 3\)"):
        m(torch.zeros(2, 3), torch.tensor([1, 2]), torch.ones(2))
    with pytest.raises(ValueError, match="labels"):
        m(_unit(2), torch.tensor([1.0, 2.0]), torch.ones(2))
    with pytest.raises(ValueError, match="MODEL.LOSS.TYPE"):
        OIMLoss(C, 3, 2, loss_type="oim++")


def test_update_helpers_directly():
    lut = torch.zeros(3, C)
    update_lut_(lut, torch.tensor([2, 2]), _unit(2, seed=13), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))
    ref, _, _ = sequential_memory_update(
        torch.zeros(3, C), torch.zeros(1, C), 0, _unit(2, seed=13), torch.tensor([3, 3])
    )
    torch.testing.assert_close(lut, ref)
    cq, head = torch.zeros(3, C), torch.tensor(2)
    push_queue_(cq, head, torch.empty(0, C))
    assert int(head) == 2 and not cq.any()


@pytest.mark.parametrize("loss_type,momentum,eps", [("OIM", 0.0, 0.1), ("LOIM", 0.5, 0.0), ("OIM", 0.9, 0.1)])
def test_extreme_weights_and_long_chains(loss_type, momentum, eps):
    """keep = 0 (plain normalized steps) and chains longer than the renormalization period."""
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([2] * 45 + [5] * 3 + [UNLABELED] * 2)[torch.randperm(50, generator=g)]
    ious = torch.rand(50, generator=g) * 0.4 + 0.65
    ious[(labels == 2).nonzero()[:3, 0]] = 1.0  # with eps = 0: keep = 1 - s = 0
    m = _loss(loss_type, num_pids=7, cq=5, oim_momentum=momentum, eps=eps)
    _check_against_oracle(m, _unit(50, seed=21), labels, ious)


def test_loim_eps_zero_leaves_the_callers_ious_alone():
    """The host copy of the IoUs can share memory with the caller's tensor: clamping must not write into it."""
    m = _loss("LOIM", num_pids=7, cq=5, eps=0.0)
    labels = torch.tensor([1, 1, UNLABELED, 2])
    ious = torch.tensor([0.5, 0.6, 0.3, 1.0])
    before = ious.clone()
    _check_against_oracle(m, _unit(4, seed=31), labels, ious)
    assert torch.equal(ious, before)


def test_loim_bfloat16_ious():
    """IoUs in a dtype NumPy lacks (bfloat16) are accepted and used as their float values."""
    labels = torch.tensor([1, 1, 2, UNLABELED, 1])
    ious = torch.tensor([0.75, 0.95, 0.8, 0.6, 0.72]).bfloat16()
    m = _loss("LOIM", num_pids=7, cq=5)
    _check_against_oracle(m, _unit(5, seed=32), labels, ious.float())
    m2 = _loss("LOIM", num_pids=7, cq=5)
    m2(_unit(5, seed=32), labels, ious)
    torch.testing.assert_close(m2.lut, m.lut, atol=0, rtol=0)


def test_momentum_one_keeps_the_lut_with_repeated_ids():
    """oim_momentum = 1: nothing is added (ratio 0), rows only renormalize; no division by log2(1) = 0."""
    m = _loss("OIM", num_pids=7, cq=5, oim_momentum=1.0)
    _check_against_oracle(m, _unit(5, seed=33), torch.tensor([1, 1, 2, UNLABELED, 1]))


def test_update_lut_zero_row_after_a_zero_weight_update():
    """A zero row that gets new = 0 first stays zero, then the next update still moves it (as the oracle)."""
    x = _unit(2, seed=34)
    lut = torch.zeros(3, C)
    update_lut_(lut, torch.tensor([1, 1]), x, torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(lut[1], x[1])
    assert not lut[0].any() and not lut[2].any()


def test_non_finite_feature_spoils_only_its_own_row():
    """Padding rounds multiply some feature by 0; a NaN feature must not leak into other ids' rows."""
    m = _loss("OIM", num_pids=7, cq=5)
    x = _unit(6, seed=35)
    x[0] = float("nan")  # id 3, seen once; id 1 is seen three times, so id 3 gets padding rounds
    labels = torch.tensor([3, 1, 1, 2, 1, UNLABELED])
    lut0 = m.lut.clone()
    m.update_memory(x, labels)
    ref, _, _ = sequential_memory_update(lut0, m.cq.clone(), 0, x, labels)
    assert torch.equal(torch.isnan(m.lut).any(1), torch.isnan(ref).any(1))
    assert torch.isnan(m.lut[2]).all() and not torch.isnan(m.lut[[0, 1]]).any()
    torch.testing.assert_close(m.lut[[0, 1, 3]], ref[[0, 1, 3]])
