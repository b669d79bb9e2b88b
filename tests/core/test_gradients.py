"""Gradients through SVD/QR splits, gauges and truncations at repeated and zero singular values.

Every test compares autograd with central finite differences of a loss that depends on the
decomposition only through what it represents (a split contracted back, a truncated
reconstruction, a network's value), in float64. Where a part of the gradient provably cannot
be recovered from the factors (an isometry of a rank-deficient matrix with more rows than its
rank), the test checks that exactly that part, and nothing else, is missing.
"""

import pytest
import torch

import tensornet as tn
from tensornet import Node, TensorNetwork, Truncation
from tensornet.core.linalg import qr, svd, truncated_svd

DT = torch.float64
ABSORB = ["both", "left", "right", None]


def fd_grad(f, a, h=1e-6):
    """Central differences of the scalar ``f`` at ``a``, entry by entry."""
    a = a.detach().contiguous()
    g = torch.zeros(a.shape, dtype=a.dtype)
    flat = g.view(-1)
    for i in range(a.numel()):
        e = torch.zeros(a.numel(), dtype=a.dtype)
        e[i] = h
        e = e.view(a.shape)
        flat[i] = (f(a + e) - f(a - e)) / (2 * h)
    return g


def ad_grad(f, a):
    a = a.detach().clone().requires_grad_(True)
    f(a).backward()
    return a.grad


def rel(x, y):
    return float((x - y).norm() / y.norm())


def rot(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))[0]


def rect_diag(values, m, n):
    a = torch.zeros(m, n, dtype=DT)
    idx = torch.arange(len(values))
    a[idx, idx] = torch.tensor(values, dtype=DT)
    return a


def rotated(values, m, n, seed=0):
    return rot(m, seed) @ rect_diag(values, m, n) @ rot(n, seed + 1)


def target(shape, seed=7):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


DEGENERATE = {
    "identity2": torch.eye(2, dtype=DT),  # the example: the gradient used to be wrong
    "diag_2_2_1": torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=DT)),
    "orthogonal": rot(4, 3),  # every value 1
    "block_wide": rotated([3, 2, 2, 2, 1, 1], 6, 7),
    "block_tall": rotated([3, 2, 2, 1], 6, 4),
}
RANK_DEFICIENT = {  # exactly-zero singular values: pruned rows / columns, exact low rank
    "diag_zeros_wide": rect_diag([3, 1, 0, 0], 4, 6),
    "diag_zeros_tall": rect_diag([3, 1, 0, 0], 6, 4),
    "pruned_rows": torch.cat([target((2, 6), 1), torch.zeros(2, 6, dtype=DT)]),
    "pruned_cols": torch.cat([target((6, 2), 2), torch.zeros(6, 2, dtype=DT)], 1),
    "zero": torch.zeros(3, 4, dtype=DT),
    "rotated_rank2": rotated([3, 1, 0, 0], 6, 5),  # rounded zeros (~1e-16)
}


def split_loss(absorb, trunc=None, r=None):
    def f(a):
        node = Node(a, ("i", "j"), name="T")
        *parts, _ = tn.split(node, ["i"], trunc=trunc, absorb=absorb)
        back = tn.contract(*parts, output=("i", "j")).tensor
        return ((back - r) ** 2).sum() + back.sum()

    return f


@pytest.mark.parametrize("absorb", ABSORB)
@pytest.mark.parametrize("name", DEGENERATE)
def test_split_gradient_is_exact_at_repeated_values(name, absorb):
    a = DEGENERATE[name]
    f = split_loss(absorb, r=target(a.shape))
    assert rel(ad_grad(f, a), fd_grad(f, a)) < 1e-6


@pytest.mark.parametrize("name", RANK_DEFICIENT)
def test_split_both_is_exact_at_zero_values(name):
    """``absorb="both"`` (sqrt of the values) is exact even for exactly-zero singular values."""
    a = RANK_DEFICIENT[name]
    f = split_loss("both", r=target(a.shape))
    g = ad_grad(f, a)
    assert torch.isfinite(g).all()
    assert rel(g, fd_grad(f, a)) < 1e-6


def lost_part(a, grad, absorb):
    """The part of the gradient an isometric factor of a rank-deficient ``a`` cannot carry."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    null = s <= 1e-300  # exactly zero values only: rounded zeros stay exact
    m, n = a.shape
    lost = torch.zeros_like(grad)
    if not null.any():
        return lost
    u0, v0 = u[:, null], vh[null].mH
    if m > n and absorb in ("right", None):  # tall isometry U
        lost += (torch.eye(m, dtype=DT) - u @ u.mH) @ grad @ v0 @ v0.mH
    if m < n and absorb in ("left", None):  # wide isometry Vh
        lost += u0 @ u0.mH @ grad @ (torch.eye(n, dtype=DT) - vh.mH @ vh)
    if absorb is None:  # U, diag(S), Vh: the off-diagonal of the zero block is lost too
        block = u0.mH @ grad @ v0
        lost += u0 @ (block - torch.diag(torch.diag(block))) @ v0.mH
    return lost


@pytest.mark.parametrize("absorb", ["left", "right", None])
@pytest.mark.parametrize("name", RANK_DEFICIENT)
def test_split_one_sided_absorb_at_zero_values_loses_only_the_unrecoverable_part(name, absorb):
    a = RANK_DEFICIENT[name]
    f = split_loss(absorb, r=target(a.shape))
    g, exact = ad_grad(f, a), fd_grad(f, a)
    assert torch.isfinite(g).all()
    assert rel(g, exact - lost_part(a, exact, absorb)) < 1e-6


@pytest.mark.parametrize("absorb", ABSORB)
@pytest.mark.parametrize("k", [1, 4])  # the block (2, 2, 2) is wholly discarded / wholly kept
def test_split_truncation_across_a_degenerate_block_is_exact(k, absorb):
    a = rotated([3, 2, 2, 2, 1, 1], 6, 7, seed=4)
    f = split_loss(absorb, Truncation(max_rank=k), r=target(a.shape))
    assert rel(ad_grad(f, a), fd_grad(f, a)) < 1e-6


@pytest.mark.parametrize("absorb", ABSORB)
@pytest.mark.parametrize("k", [2, 5])  # one or two of three equal values kept
def test_split_truncation_inside_a_degenerate_block_is_finite_and_right_where_defined(k, absorb):
    """Cutting through a block makes the kept factors arbitrary (no gradient exists), but the
    kept energy ``||T_k||^2`` is well defined along directions that keep the block: scaling,
    and the top (non-degenerate) singular pair."""
    values = [3, 2, 2, 2, 1, 1]
    a = rotated(values, 6, 7, seed=5)
    u, _, vh = torch.linalg.svd(a)

    def energy(x):
        node = Node(x, ("i", "j"))
        *parts, _ = tn.split(node, ["i"], trunc=k, absorb=absorb)
        return (tn.contract(*parts, output=("i", "j")).tensor ** 2).sum()

    g = ad_grad(energy, a)
    assert torch.isfinite(g).all()
    kept = sum(v * v for v in sorted(values, reverse=True)[:k])
    assert float((g * a).sum()) == pytest.approx(2 * kept, rel=1e-10)  # d/dt (1+t)^2 E
    top = torch.outer(u[:, 0], vh[0])
    assert float((g * top).sum()) == pytest.approx(2 * values[0], rel=1e-10)


@pytest.mark.parametrize("name", list(DEGENERATE) + ["rotated_rank2"])
def test_svd_reconstruction_gradient_is_exact(name):
    a = {**DEGENERATE, **RANK_DEFICIENT}[name]
    r = target(a.shape)

    def f(x):
        u, s, vh = svd(x)
        return (((u * s) @ vh - r) ** 2).sum()

    assert rel(ad_grad(f, a), fd_grad(f, a)) < 1e-6


@pytest.mark.parametrize("name", ["identity2", "orthogonal", "block_wide", "block_tall"])
def test_svd_drop_is_exact_for_the_polar_factor(name):
    """``U V^H`` (the polar factor) and the nuclear norm are smooth at repeated values; their
    gradient needs ``degenerate="drop"``. ``"product"`` is right for ``U S V^H`` instead: at
    repeated values no single rule serves both (the same dU, dS, dV, different gradients)."""
    a = DEGENERATE[name]
    w = target(a.shape)

    def polar(degenerate):
        def f(x):
            u, s, vh = svd(x, degenerate=degenerate)
            return ((u @ vh) * w).sum() + s.sum()

        return f

    exact = fd_grad(polar("drop"), a)
    assert rel(ad_grad(polar("drop"), a), exact) < 1e-6
    assert rel(ad_grad(polar("product"), a), exact) > 1e-3  # the choice matters, and is ours


def test_truncated_svd_projector_across_a_gap_is_exact_with_drop():
    a = rotated([3, 2, 2, 1, 1], 5, 6, seed=8)
    w = target((5, 5))

    def f(x):
        u, _, _, _ = truncated_svd(x, Truncation(max_rank=3), degenerate="drop")
        return ((u @ u.mH) * w).sum()

    assert rel(ad_grad(f, a), fd_grad(f, a)) < 1e-6


def test_tn_truncate_gradient_is_exact_across_a_gap_and_with_zero_values():
    x = rotated([3, 2, 2, 1, 0, 0], 6, 6, seed=9).reshape(6, 2, 3)
    r = target(x.shape)
    for trunc in (3, Truncation(rel_tol=0.5), 6):

        def f(t, trunc=trunc):
            return ((tn.truncate(t, ["out"], trunc, legs=("out", "a", "b")).tensor - r) ** 2).sum()

        assert rel(ad_grad(f, x), fd_grad(f, x)) < 1e-6


# -- QR: qr_split and canonicalize -----------------------------------------------------------
QR_CASES = {
    "square_rank2": rotated([2, 1, 0, 0], 4, 4, seed=10),
    "square_pruned": torch.cat([target((2, 4), 3), torch.zeros(2, 4, dtype=DT)]),
    "wide_rank1": torch.ones(3, 5, dtype=DT),
    "wide_dependent_rows": torch.cat([target((2, 5), 4)] * 2),
    "zero": torch.zeros(3, 3, dtype=DT),
    "tall_full_rank": target((6, 3), 5),
}


@pytest.mark.parametrize("name", QR_CASES)
def test_qr_split_gradient_is_exact_for_rank_deficient_square_and_wide_nodes(name):
    a = QR_CASES[name]
    r = target(a.shape)

    def f(x):
        q, rr = tn.qr_split(Node(x, ("i", "j")), ["i"])
        back = tn.contract(q, rr, output=("i", "j")).tensor
        return ((back - r) ** 2).sum()

    g = ad_grad(f, a)
    assert torch.isfinite(g).all()
    assert rel(g, fd_grad(f, a)) < 1e-6


@pytest.mark.parametrize("case", ["pruned_cols", "dependent_cols", "low_rank"])
def test_qr_of_a_tall_rank_deficient_matrix_loses_only_the_null_times_complement_part(case):
    """``Q`` of a tall matrix of rank r < n has columns that are arbitrary outside the range:
    the gradient along (complement of Q) x (null space of A) cannot reach the outputs."""
    base = target((6, 2), 6)
    a = {
        "pruned_cols": torch.cat([base, torch.zeros(6, 2, dtype=DT)], 1),
        "dependent_cols": torch.cat([base, base @ target((2, 2), 8)], 1),
        "low_rank": base @ target((2, 4), 9),
    }[case]
    r = target(a.shape)

    def f(x):
        q, rr = qr(x)
        return ((q @ rr - r) ** 2).sum()

    g, exact = ad_grad(f, a), fd_grad(f, a)
    assert torch.isfinite(g).all()
    q = torch.linalg.qr(a).Q
    _, s, vh = torch.linalg.svd(a)
    null = vh[s <= 1e-8 * s[0]]
    lost = (torch.eye(6, dtype=DT) - q @ q.T) @ exact @ null.T @ null
    assert rel(g, exact - lost) < 1e-6
    assert float(lost.norm()) > 0.1 * float(exact.norm())  # a real part, not a rounding residue


def pruned_mps():
    """An MPS whose nodes are rank-deficient (pruned slices) along the sweep towards A1."""
    g = torch.Generator().manual_seed(11)
    a0 = torch.randn(2, 4, generator=g, dtype=DT)  # (p0, b0): wide, rank 2 < 4
    a1 = torch.randn(4, 3, 2, generator=g, dtype=DT)
    a2 = torch.randn(2, 2, generator=g, dtype=DT)  # (b1, p2): square
    a2[1] = 0  # rank 1
    a0[:, 3] = 0
    return [a0, a1, a2]


@pytest.mark.parametrize("towards", ["A1", "bond b1"])
def test_canonicalize_gradient_is_exact_on_rank_deficient_nodes(towards):
    """Towards A1 every QR is of a square or wide matrix (A0: 2 x 4, A2: 2 x 2), where the
    backward is exact however deficient the rank (towards A0 the sweep would meet A1 as a tall
    rank-deficient matrix: see the QR test above for what is lost then)."""
    tensors = pruned_mps()
    r = target((2, 3, 2))
    legs = [("p0", "b0"), ("b0", "p1", "b1"), ("b1", "p2")]

    def f_of(i):
        def f(x):
            nodes = [
                Node(x if j == i else t, legs[j], name=f"A{j}") for j, t in enumerate(tensors)
            ]
            net = TensorNetwork(nodes)
            net = net.canonicalize(net.bond("b1") if towards == "bond b1" else towards)
            value = net.contract(output=("p0", "p1", "p2")).tensor
            return ((value - r) ** 2).sum()

        return f

    for i in (0, 2):  # the rank-deficient nodes
        f = f_of(i)
        g = ad_grad(f, tensors[i])
        assert torch.isfinite(g).all()
        assert rel(g, fd_grad(f, tensors[i])) < 1e-6


def test_net_truncate_gradient_is_exact_across_a_gap_with_repeated_and_zero_values():
    core = rotated([3, 2, 2, 1, 0], 5, 5, seed=13)  # bond spectrum (3, 2, 2, 1, 0)
    left = rot(5, 14)  # an isometry: the dense spectrum is the core's
    r = target((5, 5))

    def f(c):
        net = TensorNetwork([Node(left, ("i", "b"), name="L"), Node(c, ("b", "j"), name="C")])
        new, _ = net.truncate(net.bonds[0], 3)  # keeps (3, 2, 2): across the gap to 1
        return ((new.contract(output=("i", "j")).tensor - r) ** 2).sum()

    grad = ad_grad(f, core)
    assert torch.isfinite(grad).all()
    assert rel(grad, fd_grad(f, core)) < 1e-6


def test_torch_backward_is_not_finite_where_ours_is():
    """The reason for all of this: torch's own backward divides by zero here."""
    a = torch.eye(3, dtype=DT).requires_grad_(True)
    u, s, vh = torch.linalg.svd(a)
    (u.sum() + vh.sum()).backward()
    assert not torch.isfinite(a.grad).all()
    b = torch.zeros(3, 3, dtype=DT).requires_grad_(True)
    q, rr = torch.linalg.qr(b)
    (q @ rr).sum().backward()
    assert not torch.isfinite(b.grad).all()


def test_empty_matrices_have_empty_gradients():
    t = torch.zeros(0, 3, dtype=DT, requires_grad=True)
    *parts, info = tn.split(Node(t, ("a", "b")), ["a"])
    tn.contract(*parts, output=("a", "b")).tensor.sum().backward()
    assert t.grad.shape == (0, 3) and info.rank == 0


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_split_gradient_does_not_underflow_or_overflow(scale):
    a = torch.eye(3, dtype=DT) * scale
    weight = target((3, 3))

    def f(x):
        *parts, _ = tn.split(Node(x, ("i", "j")), ["i"])
        return (tn.contract(*parts, output=("i", "j")).tensor * weight).sum()

    torch.testing.assert_close(ad_grad(f, a), weight, rtol=1e-12, atol=0)


def test_complex_repeated_and_zero_values_pass_gradcheck():
    from torch.autograd import gradcheck

    g = torch.Generator().manual_seed(15)
    q = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.complex128))[0]
    d = torch.diag(torch.tensor([2.0, 2.0, 1.0, 0.0], dtype=torch.complex128))
    for a in (q, q @ d @ q.mH, torch.eye(3, dtype=torch.complex128)):
        a = a.clone().requires_grad_(True)
        for absorb in ABSORB:

            def f(x, absorb=absorb):
                *parts, _ = tn.split(Node(x, ("i", "j")), ["i"], absorb=absorb)
                return tn.contract(*parts, output=("i", "j")).tensor

            assert gradcheck(f, (a,))
        assert gradcheck(lambda x: (lambda u, s, vh: (u * s.to(u.dtype)) @ vh)(*svd(x)), (a,))
        assert gradcheck(lambda x: torch.matmul(*qr(x)), (a,))
