"""densenets.ops.dropout: dropout's distribution, its gradient, reproducibility, registration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenets.ops.dropout import Dropout, dropout


def binomial_ok(count: int, n: int, p: float, sigmas: float = 6.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_op_is_registered():
    assert hasattr(torch.ops.densenets, "dropout"), "densenets._C lacks dropout: rebuild it"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_scale_and_independence(p):
    torch.manual_seed(0)
    x = torch.rand(1_000_003) + 0.5  # no zeros of its own; an odd size (a partial last block)
    y = dropout(x, p)
    dropped = y == 0
    n = x.numel()
    assert binomial_ok(int(dropped.sum()), n, p)
    kept = ~dropped
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    # neighbours and elements 16 apart (the kernel's block) are independent: P(both) = p^2
    for lag in (1, 16, 1024):
        both = int((dropped[:-lag] & dropped[lag:]).sum())
        assert binomial_ok(both, n - lag, p * p), lag


def test_masks_of_two_calls_are_independent():
    x = torch.ones(500_000)
    a, b = dropout(x, 0.5) == 0, dropout(x, 0.5) == 0
    assert binomial_ok(int((a & b).sum()), x.numel(), 0.25)


def test_seeded_and_thread_count_independent():
    x = torch.randn(3, 70_001)
    torch.manual_seed(7)
    a = dropout(x, 0.3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(7)
        b = dropout(x, 0.3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gradient_is_the_mask_times_the_scale(dtype):
    x = torch.randn(4, 257, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.25)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    keep = (y != 0).to(dtype)
    torch.testing.assert_close(grad, g * keep / 0.75)
    torch.testing.assert_close(y, x.detach() * keep / 0.75)


def test_gradcheck_float64():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    seed = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)
    assert torch.autograd.gradcheck(lambda t: torch.ops.densenets.dropout(t, 0.4, seed)[0], (x,))


def test_edge_cases():
    x = torch.randn(10, 10)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(torch.empty(0, 3), 0.5).shape == (0, 3)
    nc = torch.randn(8, 6).t()  # non-contiguous input
    y = dropout(nc, 0.5)
    keep = y != 0
    torch.testing.assert_close(y[keep], nc[keep] * 2)
    with pytest.raises(ValueError, match="p must be in"):
        dropout(x, 1.5)


def test_module_is_nn_dropout():
    m = Dropout(0.2)
    assert isinstance(m, nn.Dropout) and m.state_dict() == {} and "p=0.2" in repr(m)
    x = torch.ones(100_000)
    assert binomial_ok(int((m(x) == 0).sum()), x.numel(), 0.2)
    m.eval()
    assert m(x) is x
    assert torch.equal(Dropout(0.5, inplace=True).eval()(x.clone()), x)


def test_opcheck():
    x = torch.randn(3, 40, requires_grad=True)
    seed = torch.tensor(12345, dtype=torch.int64)
    torch.library.opcheck(torch.ops.densenets.dropout.default, (x, 0.3, seed))
    mask = torch.rand(3, 40) > 0.3
    torch.library.opcheck(torch.ops.densenets.dropout_backward.default, (torch.randn(3, 40), mask, 1 / 0.7))


def test_compiles_in_a_transformer_block():
    layer = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), Dropout(0.1), nn.Linear(32, 16))
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 16, requires_grad=True)
    out = compiled(x)
    out.sum().backward()
    assert out.shape == (4, 16) and x.grad is not None and torch.isfinite(x.grad).all()
    layer.eval()
    torch.testing.assert_close(torch.compile(layer, backend="aot_eager")(x), layer(x))


def test_matches_f_dropout_statistics_on_activations():
    # Same expected value as F.dropout: E[dropout(x)] = x.
    torch.manual_seed(0)
    x = torch.randn(64)
    mean = torch.stack([dropout(x, 0.3) for _ in range(4000)]).mean(0)
    ref = torch.stack([F.dropout(x, 0.3) for _ in range(4000)]).mean(0)
    assert (mean - x).abs().max() < 0.12 and (ref - x).abs().max() < 0.12
