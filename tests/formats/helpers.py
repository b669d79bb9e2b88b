"""Shared builders for the format tests: tensors with known structure, dense references."""

import math

import torch

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel_err(x, y):
    return float(torch.linalg.vector_norm(x - y) / torch.linalg.vector_norm(x))


def random_tt_dense(sizes, ranks, seed=0):
    """A dense tensor with TT ranks exactly ``ranks`` (random cores, generic)."""
    g = gen(seed)
    r = (1, *ranks, 1)
    out = torch.ones(1, 1, dtype=F64)
    for k, n in enumerate(sizes):
        core = torch.randn(r[k], n, r[k + 1], generator=g, dtype=F64)
        out = torch.tensordot(out, core, dims=([out.ndim - 1], [0]))
    return out.reshape(sizes)


def random_tucker_dense(sizes, ranks, seed=0):
    g = gen(seed)
    x = torch.randn(*ranks, generator=g, dtype=F64)
    for k, (n, r) in enumerate(zip(sizes, ranks)):
        u = torch.randn(n, r, generator=g, dtype=F64)
        x = torch.movedim(torch.tensordot(u, x, dims=([1], [k])), 0, k)
    return x


def cp_dense(factors, weights=None):
    rank = factors[0].shape[1]
    w = torch.ones(rank, dtype=factors[0].dtype) if weights is None else weights
    letters = "abcdefghij"[: len(factors)]
    eq = "r," + ",".join(f"{c}r" for c in letters) + "->" + letters
    return torch.einsum(eq, w, *factors)


def unfold(x, axes):
    axes = list(axes)
    rest = [i for i in range(x.ndim) if i not in axes]
    return x.permute(axes + rest).reshape(math.prod(x.shape[i] for i in axes), -1)


def best_tail(x, axes, rank):
    """Error of the best rank-``rank`` approximation of the matricisation (Eckart-Young)."""
    s = torch.linalg.svdvals(unfold(x, axes))
    return float(torch.linalg.vector_norm(s[rank:]))


def decaying(sizes, seed=0, rate=0.5):
    """A tensor whose multilinear spectra decay geometrically (so truncation matters)."""
    g = gen(seed)
    x = torch.randn(*sizes, generator=g, dtype=F64)
    for k, n in enumerate(sizes):
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
        q = q * rate ** torch.arange(n, dtype=F64)
        x = torch.movedim(torch.tensordot(q, x, dims=([1], [k])), 0, k)
    return x
