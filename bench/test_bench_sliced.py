"""Sliced contraction: PEPS 4x4 bond 4 norm with the largest intermediate limited to an
eighth of what the plan needs (slicing=True), against the same plan unsliced."""

import torch
from _networks import network, peps_norm


def test_peps4_unsliced(benchmark):
    net = network(*peps_norm(4, 4, 4))
    net.contract()
    result = benchmark(net.contract)
    benchmark.extra_info["largest"] = net.plan().largest_intermediate
    torch.testing.assert_close(result.tensor, net.contract(optimize="greedy").tensor)


def test_peps4_sliced_to_an_eighth(benchmark):
    net = network(*peps_norm(4, 4, 4))
    limit = net.plan().largest_intermediate // 8
    plan = net.plan(max_intermediate=limit, slicing=True)
    assert plan.sliced and plan.largest_intermediate <= limit
    net.contract(max_intermediate=limit, slicing=True)
    result = benchmark(net.contract, max_intermediate=limit, slicing=True)
    benchmark.extra_info.update(
        largest=plan.largest_intermediate, slices=plan.slices, sliced=list(plan.sliced)
    )
    torch.testing.assert_close(result.tensor, net.contract(optimize="greedy").tensor)
