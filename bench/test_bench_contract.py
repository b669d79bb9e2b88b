"""Norm of a random MPS (64 sites, physical dim 2, bond dim 64, float64), contracted repeatedly.

Side by side, same tensors, same optimizer ("auto"):
- tensornet: `TensorNetwork.contract` (cached plan);
- opt_einsum: the compiled `opt_einsum.contract_expression` called directly (torch backend);
- quimb: `TensorNetwork.contract(all)` when the bench extra is installed;
plus first-call planning time (cache cleared before every round).

Target: repeated contraction within 1.10x of raw opt_einsum.
"""

import math

import opt_einsum as oe
import pytest
import torch

import tensornet as tn

SITES, PHYS, CHI = 64, 2, 64


def mps_tensors(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for i in range(SITES):
        shape = ([] if i == 0 else [CHI]) + [PHYS] + ([] if i == SITES - 1 else [CHI])
        tensors.append(
            torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(CHI * PHYS)
        )
    return tensors


def norm_network_legs() -> list[tuple[str, ...]]:
    """Leg names of ket site i, then bra site i, for every site."""
    legs = []
    for i in range(SITES):
        for side in ("k", "b"):
            left = () if i == 0 else (f"{side}{i}",)
            right = () if i == SITES - 1 else (f"{side}{i + 1}",)
            legs.append(left + (f"p{i}",) + right)
    return legs


@pytest.fixture(scope="module")
def operands():
    tensors = mps_tensors()
    return [t for t in tensors for _ in range(2)], norm_network_legs()


@pytest.fixture(scope="module")
def network(operands):
    tensors, legs = operands
    return tn.TensorNetwork(tn.Node(t, x) for t, x in zip(tensors, legs))


def test_mps_norm_tensornet(benchmark, network):
    network.contract()  # plan once; the benchmark measures repeated contraction
    result = benchmark(network.contract)
    assert result.tensor.ndim == 0


def test_mps_norm_opt_einsum_compiled(benchmark, operands, network):
    tensors, _ = operands
    plan = network.plan()
    expression = oe.contract_expression(plan.equation, *[t.shape for t in tensors], optimize="auto")
    result = benchmark(expression, *tensors, backend="torch")
    torch.testing.assert_close(result, network.contract().tensor)


def test_mps_norm_quimb(benchmark, operands, network):
    qtn = pytest.importorskip("quimb.tensor")
    tensors, legs = operands
    qnet = qtn.TensorNetwork([qtn.Tensor(t, inds=x) for t, x in zip(tensors, legs)])
    qnet.contract(all, optimize="auto")  # let quimb cache its path
    result = benchmark(qnet.contract, all, optimize="auto")
    torch.testing.assert_close(torch.as_tensor(result), network.contract().tensor)


def test_mps_norm_first_call_planning(benchmark, network):
    def plan_from_scratch():
        tn.clear_cache()
        return network.plan()

    plan = benchmark(plan_from_scratch)
    assert plan.largest_intermediate <= CHI * CHI * PHYS
