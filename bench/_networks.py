"""Networks shared by the contraction benchmarks (float64, seeded): MPS and PEPS norms, the
hand-written torch zipper, and a plain-tensordot runner for any path."""

from __future__ import annotations

import math

import torch

import tensornet as tn


def mps_norm(sites: int, chi: int = 64, phys: int = 2, seed: int = 0):
    """(tensors, legs) of <psi|psi> for a random MPS: ket site i, then bra site i."""
    g = torch.Generator().manual_seed(seed)
    tensors, legs = [], []
    for i in range(sites):
        shape = ([] if i == 0 else [chi]) + [phys] + ([] if i == sites - 1 else [chi])
        t = torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(chi * phys)
        for side in ("k", "b"):
            left = () if i == 0 else (f"{side}{i}",)
            right = () if i == sites - 1 else (f"{side}{i + 1}",)
            tensors.append(t)
            legs.append(left + (f"p{i}",) + right)
    return tensors, legs


def torch_zipper(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The MPS norm by hand: environment (ket leg, bra leg), absorb ket i then bra i."""
    tensordot = torch.tensordot
    env = tensordot(tensors[0], tensors[1], dims=([0], [0]))  # (k, b)
    for i in range(2, len(tensors) - 2, 2):
        env = tensordot(env, tensors[i], dims=([0], [0]))  # (b, p, k')
        env = tensordot(env, tensors[i + 1], dims=([0, 1], [0, 1]))  # (k', b')
    env = tensordot(env, tensors[-2], dims=([0], [0]))  # (b, p)
    return tensordot(env, tensors[-1], dims=([0, 1], [0, 1]))


def peps_norm(rows: int, cols: int, bond: int, phys: int = 2, seed: int = 0):
    """(tensors, legs) of <psi|psi> for a random PEPS: ket and bra of each site."""
    g = torch.Generator().manual_seed(seed)
    tensors, legs = [], []
    for i in range(rows):
        for j in range(cols):
            virt = []
            if i > 0:
                virt.append(f"v{i - 1},{j}")
            if i < rows - 1:
                virt.append(f"v{i},{j}")
            if j > 0:
                virt.append(f"h{i},{j - 1}")
            if j < cols - 1:
                virt.append(f"h{i},{j}")
            t = torch.randn(phys, *[bond] * len(virt), generator=g, dtype=torch.float64)
            t = t * (1.3 / math.sqrt(t.numel()))
            for side in ("k", "b"):
                tensors.append(t)
                legs.append((f"p{i},{j}",) + tuple(side + v for v in virt))
    return tensors, legs


def network(tensors, legs) -> tn.TensorNetwork:
    return tn.TensorNetwork(tn.Node(t, x) for t, x in zip(tensors, legs))


def tensordot_runner(legs, path):
    """A function running ``path`` with one ``torch.tensordot`` per step (what an executor
    without layout planning does: every step permutes both operands to (free, summed))."""
    current = [list(x) for x in legs]
    steps = []
    for step in path:
        i, j = sorted(step, reverse=True)
        a, b = current.pop(i), current.pop(j)
        shared = [x for x in a if x in b]
        steps.append((i, j, ([a.index(x) for x in shared], [b.index(x) for x in shared])))
        current.append([x for x in a if x not in shared] + [x for x in b if x not in shared])

    def run(*tensors):
        ops = list(tensors)
        for i, j, dims in steps:
            a = ops.pop(i)
            b = ops.pop(j)
            ops.append(torch.tensordot(a, b, dims=dims))
        return ops[0]

    return run


def quimb_network(tensors, legs):
    import quimb.tensor as qtn

    return qtn.TensorNetwork([qtn.Tensor(t, inds=x) for t, x in zip(tensors, legs)])


def fresh_quimb_auto_hq():
    """A new cotengra auto-hq optimizer (what quimb's optimize="auto-hq" uses) with cotengra's
    path and expression caches emptied, so a contraction with it plans from scratch."""
    import cotengra as ctg
    from cotengra import interface

    for name in ("_CONTRACT_EXPR_CACHE", "_PATH_CACHE", "_TREE_CACHE"):
        cache = getattr(interface, name, None)
        if isinstance(cache, dict):
            cache.clear()
    return ctg.AutoHQOptimizer()
