"""MPS norm (16-128 sites, physical dim 2, bond dim 64, float64), contracted repeatedly.

Side by side, same tensors, same path (the one tensornet's default planner chose):
- tensornet: `TensorNetwork.contract()` (cached plan, per-network fast path);
- opt_einsum: the compiled `opt_einsum.contract_expression` called directly (torch backend);
- torch zipper: the hand-written loop of two `torch.tensordot`s per site (the floor);
- quimb: `TensorNetwork.contract(all)` when the bench extra is installed;
plus first-call planning time (cache cleared before every round).

Targets: tensornet <= 0.9x compiled opt_einsum, <= 1.1x the torch zipper.
"""

import opt_einsum as oe
import pytest
import torch
from _networks import mps_norm, network, quimb_network, torch_zipper

import tensornet as tn

SITES = [16, 32, 64, 128]


@pytest.fixture(scope="module", params=SITES, ids=[f"{s}sites" for s in SITES])
def mps(request):
    tensors, legs = mps_norm(request.param)
    net = network(tensors, legs)
    expected = torch_zipper(tensors)
    torch.testing.assert_close(net.contract().tensor, expected)
    return tensors, legs, net, expected


def test_mps_norm_tensornet(benchmark, mps):
    _, _, net, expected = mps
    net.contract()  # plan once; the benchmark measures repeated contraction
    result = benchmark(net.contract)
    torch.testing.assert_close(result.tensor, expected)


def test_mps_norm_opt_einsum_compiled(benchmark, mps):
    tensors, _, net, expected = mps
    plan = net.plan()
    expression = oe.contract_expression(
        plan.equation, *[t.shape for t in tensors], optimize=list(plan.path)
    )
    result = benchmark(expression, *tensors, backend="torch")
    torch.testing.assert_close(result, expected)


def test_mps_norm_torch_zipper(benchmark, mps):
    tensors, _, _, expected = mps
    result = benchmark(torch_zipper, tensors)
    torch.testing.assert_close(result, expected)


def test_mps_norm_quimb(benchmark, mps):
    pytest.importorskip("quimb.tensor")
    tensors, legs, _, expected = mps
    qnet = quimb_network(tensors, legs)
    qnet.contract(all, optimize="auto")  # let quimb cache its path
    result = benchmark(qnet.contract, all, optimize="auto")
    torch.testing.assert_close(torch.as_tensor(result), expected)


def test_mps_norm_first_call_planning(benchmark, mps):
    _, _, net, _ = mps

    def plan_from_scratch():
        tn.clear_cache()
        return net.plan()

    plan = benchmark(plan_from_scratch)
    assert plan.largest_intermediate <= 64 * 64 * 2
