"""Per-call cost of a small repeated contraction: 3 nodes (8x16, 16x8x16, 16x8), float64.

tensornet `net.contract()` (plan cached) against the two raw `torch.tensordot` calls it
amounts to. Target: at most 1.5x.
"""

import torch

import tensornet as tn


def operands():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 16, generator=g, dtype=torch.float64)
    b = torch.randn(16, 8, 16, generator=g, dtype=torch.float64)
    c = torch.randn(16, 8, generator=g, dtype=torch.float64)
    return a, b, c


def test_three_nodes_tensornet_repeat(benchmark):
    a, b, c = operands()
    net = tn.TensorNetwork(
        [tn.Node(a, ("i", "j")), tn.Node(b, ("j", "x", "k")), tn.Node(c, ("k", "l"))]
    )
    net.contract()
    result = benchmark(net.contract)
    torch.testing.assert_close(result.tensor, torch.einsum("ij,jxk,kl->ixl", a, b, c))


def test_three_nodes_two_raw_tensordots(benchmark):
    a, b, c = operands()

    def two_tensordots():
        return torch.tensordot(torch.tensordot(a, b, dims=([1], [0])), c, dims=([2], [0]))

    result = benchmark(two_tensordots)
    torch.testing.assert_close(result, torch.einsum("ij,jxk,kl->ixl", a, b, c))
