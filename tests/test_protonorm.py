"""ProtoNorm 1-d / 2-d against the per-prototype oracle: forward, backward, running statistics."""

import pytest
import torch
from torch import nn

from oimnet.models.protonorm import (
    ProtoNorm1d,
    ProtoNorm2d,
    convert_bn2d_to_protonorm,
    prototype_coefficients,
    prototype_weights,
    set_protonorm_labels,
)
from tests.reference_losses import UNLABELED, reference_protonorm, reference_running_stats


def _labels(n, seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, generator=g)
    ids = torch.randint(1, 6, (n,), generator=g)
    return torch.where(r < 0.4, 0, torch.where(r < 0.75, ids, UNLABELED))


LABEL_CASES = {
    "mixed": lambda n: _labels(n, 0),
    "only_background": lambda n: torch.zeros(n, dtype=torch.int64),
    "only_unlabeled": lambda n: torch.full((n,), UNLABELED),
    "one_id_and_singletons": lambda n: torch.tensor([3] * (n // 2) + [0] + [UNLABELED] * (n - n // 2 - 1)),
}


def _module(cls, c, affine, seed=1):
    m = cls(c, affine=affine).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        m.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
        if affine:
            m.weight.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
            m.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    return m


def _compare(m, x, labels, via_set_labels=False):
    """Run module and oracle on the same data; compare y, input/weight grads and running stats."""
    rm0, rv0 = m.running_mean.clone(), m.running_var.clone()
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    if via_set_labels:
        set_protonorm_labels(m, labels)
        y1 = m(x1)
    else:
        y1 = m(x1, labels)
    w = b = None
    if m.affine:
        w = m.weight.detach().clone().requires_grad_()
        b = m.bias.detach().clone().requires_grad_()
    y2, mean, var = reference_protonorm(x2, labels, m.eps, w, b)
    g = torch.randn(y1.shape, generator=torch.Generator().manual_seed(9), dtype=y1.dtype)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(x1.grad, x2.grad)
    if m.affine:
        torch.testing.assert_close(m.weight.grad, w.grad)
        torch.testing.assert_close(m.bias.grad, b.grad)
    n = x.numel() // x.shape[1]
    rm, rv = reference_running_stats(rm0, rv0, mean, var, n, m.momentum)
    torch.testing.assert_close(m.running_mean, rm)
    torch.testing.assert_close(m.running_var, rv)
    assert int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("affine", [False, True])
def test_protonorm1d_matches_oracle(case, affine):
    x = torch.randn(24, 5, dtype=torch.float64) * 3 + 2
    _compare(_module(ProtoNorm1d, 5, affine), x, LABEL_CASES[case](24))


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("affine", [False, True])
def test_protonorm2d_matches_oracle(case, affine):
    x = torch.randn(12, 4, 3, 2, dtype=torch.float64) * 3 + 2
    _compare(_module(ProtoNorm2d, 4, affine), x, LABEL_CASES[case](12), via_set_labels=True)


def test_protonorm_differs_from_batchnorm_with_labels():
    """Guards the oracle comparison: with repeated ids the prototype mean is not the batch mean."""
    x = torch.randn(24, 5, dtype=torch.float64)
    labels = LABEL_CASES["one_id_and_singletons"](24)
    y_pn = ProtoNorm1d(5).double()(x, labels)
    y_bn = nn.BatchNorm1d(5, affine=False).double()(x)
    assert (y_pn - y_bn).abs().max() > 1e-2


def test_float32_channels_last_and_no_labels():
    torch.manual_seed(0)
    x = torch.randn(10, 6, 4, 4).contiguous(memory_format=torch.channels_last) + 1
    labels = _labels(10, 3)
    m = ProtoNorm2d(6)
    y = m(x, labels)
    y_ref, _, _ = reference_protonorm(x, labels, m.eps, m.weight.detach(), m.bias.detach())
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    # without labels: exactly BatchNorm (outputs and running stats)
    pn, bn = ProtoNorm2d(6), nn.BatchNorm2d(6)
    torch.testing.assert_close(pn(x), bn(x))
    torch.testing.assert_close(pn.running_var, bn.running_var)
    assert int(pn.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_eval_mode_uses_running_stats():
    m = _module(ProtoNorm2d, 4, affine=True).eval()
    bn = nn.BatchNorm2d(4).double().eval()
    bn.load_state_dict(m.state_dict())
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(m(x, torch.tensor([0, 1, UNLABELED])), bn(x))
    assert int(m.num_batches_tracked) == 0


def test_gradcheck_double():
    labels = torch.tensor([0, 0, 2, 2, 2, UNLABELED, 1])
    m1 = ProtoNorm1d(3, affine=True).double()
    x1 = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: m1.train()(x, labels), (x1, m1.weight, m1.bias))
    m2 = ProtoNorm2d(2).double()
    x2 = torch.randn(7, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: m2(x, labels), (x2, m2.weight, m2.bias))


def test_state_dict_keys_as_batchnorm():
    assert set(ProtoNorm1d(8).state_dict()) == set(nn.BatchNorm1d(8, affine=False).state_dict())
    assert set(ProtoNorm2d(8).state_dict()) == set(nn.BatchNorm2d(8).state_dict())
    ProtoNorm2d(8).load_state_dict(nn.BatchNorm2d(8).state_dict(), strict=True)


def test_convert_bn2d_keeps_state():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
    for bn in (block[1], block[2][0]):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in block.state_dict().items()}
    block.eval()
    x = torch.randn(5, 3, 2, 2)
    y_before = block(x)
    out = convert_bn2d_to_protonorm(block)
    assert out is block
    assert isinstance(block[1], ProtoNorm2d) and isinstance(block[2][0], ProtoNorm2d)
    after = block.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not block[1].training
    torch.testing.assert_close(block(x), y_before)
    single = convert_bn2d_to_protonorm(nn.BatchNorm2d(4))
    assert isinstance(single, ProtoNorm2d) and single.affine


def test_set_protonorm_labels_and_errors():
    block = convert_bn2d_to_protonorm(nn.Sequential(nn.BatchNorm2d(2), nn.BatchNorm2d(2)))
    labels = torch.tensor([0, 1, 1, UNLABELED])
    set_protonorm_labels(block, labels)
    assert block[0]._coef is block[1]._coef  # computed once, shared
    coef = block[0]._coef  # rows [w; 1/N; -w]
    torch.testing.assert_close(coef[0].sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(coef[0], prototype_weights(labels))
    torch.testing.assert_close(coef[1], torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(coef[2], -coef[0])
    with pytest.raises(ValueError, match="labels .* do not match the 3 RoIs"):
        block(torch.randn(3, 2, 2, 2))
    set_protonorm_labels(block, None)
    assert block[0]._labels is None
    with pytest.raises(ValueError, match="4-d input"):
        ProtoNorm2d(2)(torch.randn(3, 2))
    with pytest.raises(ValueError, match="1-d integer"):
        prototype_weights(torch.tensor([[1, 2]]))


def test_prototype_weights_values():
    w = prototype_weights(torch.tensor([0, 0, 4, UNLABELED, UNLABELED, 4, 4, 0]))
    # prototypes: background (3 RoIs), id 4 (3 RoIs), two unlabeled singletons -> P = 4
    expected = torch.tensor([1 / 12, 1 / 12, 1 / 12, 1 / 4, 1 / 4, 1 / 12, 1 / 12, 1 / 12], dtype=torch.float64)
    torch.testing.assert_close(w, expected)


def test_prototype_coefficients_fallback_equals_histogram_path():
    """Labels too large (or negative) for a histogram take the torch.unique path; same coefficients."""
    labels = torch.tensor([0, 0, 4, UNLABELED, UNLABELED, 4, 4, 0, 7])
    big = labels.clone()
    big[big == 7] = 10**9  # beyond the histogram range
    host = prototype_coefficients(labels, dtype=torch.float64)
    fallback = prototype_coefficients(big, dtype=torch.float64)
    torch.testing.assert_close(fallback, host)
    negative = prototype_coefficients(torch.where(labels == 7, -3, labels), dtype=torch.float64)
    torch.testing.assert_close(negative, host)
    assert host.shape == (3, 9)
    torch.testing.assert_close(host[1], torch.full((9,), 1 / 9, dtype=torch.float64))


@pytest.mark.parametrize("module,shape", [(ProtoNorm1d, (24, 5)), (ProtoNorm2d, (12, 4, 3, 2))])
def test_half_input_computed_in_float32(module, shape):
    """Half inputs (AMP) are normalized in float32; output and input gradient come back in half, as BatchNorm."""
    x32 = torch.randn(*shape) * 3 + 2
    labels = _labels(shape[0], 5)
    m16, m32 = _module(module, shape[1], True).float(), _module(module, shape[1], True).float()
    m32.load_state_dict(m16.state_dict())
    x16 = x32.half().requires_grad_()
    xr = x16.detach().float().requires_grad_()
    y16, y32 = m16(x16, labels), m32(xr, labels)
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16.float(), y32, atol=2e-3, rtol=2e-3)
    g = torch.randn(y32.shape)
    y16.backward(g)
    y32.backward(g)
    assert x16.grad.dtype == torch.float16
    torch.testing.assert_close(x16.grad.float(), xr.grad, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(m16.running_var, m32.running_var)


def test_backward_with_create_graph_is_first_order_only():
    """create_graph=True gives the usual first-order gradient; differentiating it again raises."""
    m = _module(ProtoNorm1d, 5, False).float()
    labels = _labels(24, 6)
    x = (torch.randn(24, 5) + 1).requires_grad_()
    (grad,) = torch.autograd.grad(m(x, labels).pow(2).sum(), x, create_graph=True)
    x2 = x.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(_module(ProtoNorm1d, 5, False).float()(x2, labels).pow(2).sum(), x2)
    torch.testing.assert_close(grad.detach(), expected)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        grad.sum().backward()
