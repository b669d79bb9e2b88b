"""Tensorized TT, TR, Tucker and CP (``out_dims``/``in_dims`` through the base template).

Each is checked against the same format on the reshaped tensor of modes (same factors, to the
last bit), against the dense matrix or kernel (exact at full rank, the reported error at lower
ranks), and through its structure (JSON, ``from_factors``, ``with_ranks``, fraction budgets,
truncation), spectra of its cuts (against dense SVDs) and bad inputs.
"""

import json
import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import Structure, format_cut, fraction_ranks, get_format
from tensornet.formats.tensorize import (
    balanced_dims,
    balanced_factors,
    split_layout,
    tensorization,
)

F64 = torch.float64
TENSORIZED = ("tt", "tr", "tucker", "cp")
MATRIX = ((16, 9), ("out", "in"))
KERNEL = ((16, 9, 3, 3), ("out", "in", "kh", "kw"))
DIMS = {"out_dims": (4, 4), "in_dims": (3, 3)}
ALGO = {"cp": {"max_iter": 300, "tol": 1e-14}}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def cp_weight(shape, rank, seed=0):
    """A tensor of exact CP rank ``rank`` over the modes ``4, 4, 3, 3[, kh, kw]``."""
    modes = (4, 4, 3, 3, *shape[2:])
    g = gen(seed)
    factors = [torch.randn(n, rank, generator=g, dtype=F64) for n in modes]
    letters = "abcdef"[: len(modes)]
    expr = ",".join(f"{c}r" for c in letters) + "->" + letters
    return torch.einsum(expr, *factors).reshape(shape)


def build(name, x, legs, **kw):
    return get_format(name).from_dense(x, legs=legs, **DIMS, **ALGO.get(name, {}), **kw)


@pytest.mark.parametrize("name", TENSORIZED)
@pytest.mark.parametrize("shape, legs", [MATRIX, KERNEL])
def test_it_is_the_format_of_the_tensor_of_modes(name, shape, legs):
    """Same ranks and factors as the plain format on ``x.reshape(out_dims + in_dims + k)``."""
    x = torch.randn(*shape, generator=gen(1), dtype=F64)
    fmt = build(name, x, legs, fraction=0.5)
    s = fmt.structure
    modes = ("out_0", "out_1", "in_0", "in_1", *legs[2:])
    assert s.legs == legs and s.shape == shape and fmt.shape == shape
    assert s.modes == (("out_0", "out_1"), ("in_0", "in_1"), *((leg,) for leg in legs[2:]))
    assert s.option("out_dims") == (4, 4) and s.option("in_dims") == (3, 3)
    inner = dict(s.options)
    del inner["out_dims"], inner["in_dims"]
    plain = get_format(name).from_dense(
        x.reshape(4, 4, 3, 3, *shape[2:]), legs=modes, ranks=fmt.ranks, **inner,
        **ALGO.get(name, {}),
    )  # fmt: skip
    assert plain.ranks == fmt.ranks and plain.error == fmt.error
    assert [f.legs for f in plain.structure.factors] == [f.legs for f in s.factors]
    for k, t in fmt.factor_tensors().items():
        assert torch.equal(t, plain.factor_tensors()[k])
    torch.testing.assert_close(fmt.to_dense(), plain.to_dense().reshape(shape), rtol=0, atol=0)
    assert sorted(fmt.network.open_legs) == sorted(modes)
    assert fmt.error == pytest.approx(rel(fmt.to_dense(), x), rel=1e-9)
    assert fmt.num_params <= 0.5 * math.prod(shape)


@pytest.mark.parametrize("name", TENSORIZED)
@pytest.mark.parametrize("shape, legs", [MATRIX, KERNEL])
def test_full_rank_is_exact(name, shape, legs):
    if name == "cp":  # CP has no full rank of its own: a tensor of CP rank 3, fitted at 3
        x = cp_weight(shape, 3)
        fmt = build(name, x, legs, ranks=3)
    else:
        x = torch.randn(*shape, generator=gen(2), dtype=F64)
        fmt = build(name, x, legs)
        # (TR-SVD splits its first rank pair as it likes; max_ranks assume r_0 = r_1)
        assert name == "tr" or fmt.ranks == fmt.structure.max_ranks
    assert rel(fmt.to_dense(), x) < 1e-8 and fmt.error < 1e-8


@pytest.mark.parametrize("name", TENSORIZED)
@pytest.mark.parametrize("shape, legs", [MATRIX, KERNEL])
def test_structure_rebuilds_the_format(name, shape, legs):
    x = torch.randn(*shape, generator=gen(3), dtype=F64)
    fmt = build(name, x, legs, fraction=0.4)
    s, cls = fmt.structure, get_format(name)
    opts = {k: v for k, v in s.options}
    assert cls.structure_for(shape, fmt.ranks, legs=legs, **DIMS) == s  # defaults recorded
    assert cls.structure_for(shape, fmt.ranks, legs=legs, **opts) == s
    assert Structure.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.with_ranks(None) == cls.structure_for(shape, None, legs=legs, **DIMS)
    again = cls.from_factors(s, fmt.factor_tensors())
    assert again.structure == s
    torch.testing.assert_close(again.to_dense(), fmt.to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(s.contract(fmt.factor_tensors()), fmt.to_dense())
    net = fmt.network.contract(output=s.mode_legs).tensor.reshape(shape)
    torch.testing.assert_close(net, fmt.to_dense())
    f32 = fmt.to(dtype=torch.float32)
    assert f32.structure == s and f32.to_dense().dtype == torch.float32


@pytest.mark.parametrize("name", TENSORIZED)
@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_fraction_counts_the_tensorized_structure(name, fraction):
    shape, legs = KERNEL
    ranks = fraction_ranks(name, shape, fraction, legs=legs, **DIMS)
    cls = get_format(name)
    s = cls.structure_for(shape, ranks, legs=legs, **DIMS)
    assert s.num_params <= fraction * math.prod(shape)
    tops = s.max_ranks
    if max(ranks) < max(tops):
        up = tuple(min(max(ranks) + 1, t) for t in tops)
        assert cls.structure_for(shape, up, legs=legs, **DIMS).num_params > fraction * 1296
    plain = cls.structure_for((4, 4, 3, 3, 3, 3), ranks, legs=s.mode_legs,
                              **{k: v for k, v in s.options if k not in DIMS})  # fmt: skip
    assert plain.num_params == s.num_params and plain.max_ranks == tops


@pytest.mark.parametrize("name", TENSORIZED)
def test_truncate_keeps_the_split(name):
    shape, legs = KERNEL
    x = torch.randn(*shape, generator=gen(4), dtype=F64)
    fmt = build(name, x, legs, fraction=0.5)
    small = fmt.truncate(ranks=tuple(max(1, r // 2) for r in fmt.ranks))
    assert small.structure == fmt.structure.with_ranks(small.ranks)
    assert small.num_params < fmt.num_params
    assert small.error == pytest.approx(rel(small.to_dense(), fmt.to_dense()), rel=1e-6)


def test_train_order_interleaves_out_and_in_modes():
    x = torch.randn(*KERNEL[0], generator=gen(5), dtype=F64)
    tt = build("tt", x, KERNEL[1])
    assert tt.order == ("kh", "kw", "out_0", "in_0", "out_1", "in_1")
    assert tt.structure.options == (("order", tt.order), ("out_dims", (4, 4)), ("in_dims", (3, 3)))
    # bond k separates whole (out, in) pairs: 9, 9*4, 9*4*3 | 4*3, 3
    assert tt.ranks == (3, 9, 36, 12, 3) == tt.structure.max_ranks
    tr = build("tr", x, KERNEL[1])
    assert tr.order == tt.order
    # an order of dense legs stands for their modes; one of mode legs is kept
    conv = build("tt", x, KERNEL[1], order=("in", "kh", "kw", "out"))
    assert conv.order == ("in_0", "in_1", "kh", "kw", "out_0", "out_1")
    mixed = ("out_1", "in_1", "kh", "kw", "in_0", "out_0")
    assert build("tt", x, KERNEL[1], order=mixed).order == mixed
    assert rel(conv.to_dense(), x) < 1e-12
    tucker2 = build("tucker", x, KERNEL[1], modes=("out", "in"), ranks=(4, 4, 3, 3))
    assert tucker2.modes == ("out_0", "out_1", "in_0", "in_1")
    assert tucker2.core.shape == (4, 4, 3, 3, 3, 3) and rel(tucker2.to_dense(), x) < 1e-12


def test_unequal_mode_counts_and_a_leg_kept_whole():
    x = torch.randn(16, 9, generator=gen(6), dtype=F64)
    fmt = get_format("tt").from_dense(x, legs=("o", "i"), out_dims=(2, 2, 4), in_dims=(9,))
    assert fmt.order == ("o_0", "i_0", "o_1", "o_2")
    assert fmt.structure.modes == (("o_0", "o_1", "o_2"), ("i_0",))
    assert rel(fmt.to_dense(), x) < 1e-12


@pytest.mark.parametrize("name", ["tt", "tucker", "cp"])
def test_spectra_of_cuts_are_the_dense_ones(name):
    shape, legs = KERNEL
    x = torch.randn(*shape, generator=gen(7), dtype=F64)
    fmt = build(name, x, legs, fraction=0.5)
    w = fmt.to_dense()
    for left in (["out"], ["in"], ["out", "in"], ["kh"]):
        res = format_cut(fmt, left)
        rest = [leg for leg in legs if leg not in left]
        perm = [legs.index(leg) for leg in (*left, *rest)]
        n = math.prod(shape[legs.index(leg)] for leg in left)
        ref = torch.linalg.svdvals(w.permute(perm).reshape(n, -1))
        torch.testing.assert_close(res.spectrum.values, ref, rtol=1e-9, atol=1e-10)


def test_clamp_ranks_uses_the_modes():
    shape, legs = KERNEL
    assert get_format("tucker").clamp_ranks(shape, 64, legs=legs, **DIMS) == (3, 3, 4, 3, 4, 3)
    assert get_format("tt").clamp_ranks(shape, 64, legs=legs, **DIMS) == (3, 9, 36, 12, 3)
    # CP: as many parameters as dense, over the mode sizes (4 + 4 + 3 + 3 + 3 + 3 = 20)
    assert get_format("cp").clamp_ranks(shape, 10**6, legs=legs, **DIMS) == (1296 // 20,)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"out_dims": (4, 4)}, "needs both out_dims and in_dims; in_dims is missing"),
        ({"in_dims": (3, 3)}, "needs both out_dims and in_dims; out_dims is missing"),
        ({"out_dims": (4, 3), "in_dims": (3, 3)}, r"out_dims \(4, 3\) multiply to 12, not"),
        ({"out_dims": (16,), "in_dims": (3, 2)}, r"in_dims \(3, 2\) multiply to 6, not the size 9"),
        ({"out_dims": (4, 0), "in_dims": (3, 3)}, "out_dims must be positive ints"),
        ({"out_dims": "44", "in_dims": (3, 3)}, "out_dims must be a sequence of ints"),
    ],
)
@pytest.mark.parametrize("name", TENSORIZED)
def test_bad_dims_are_named(name, kw, match):
    x = torch.randn(16, 9, dtype=F64)
    cls = get_format(name)
    with pytest.raises(ValueError, match=f"^{cls.__name__}.from_dense: .*{match}"):
        cls.from_dense(x, ranks=2, legs=("out", "in"), **kw)
    with pytest.raises(ValueError, match=match):
        get_format(name).structure_for((16, 9), 2, legs=("out", "in"), **kw)


def test_formats_without_the_split_refuse_the_option():
    for name in ("tucker2", "svd", "grouped"):
        assert "out_dims" not in get_format(name).structure_options()
        with pytest.raises(TypeError, match="out_dims"):
            get_format(name).structure_for((16, 9, 3, 3), **DIMS)
    for name in TENSORIZED:
        assert get_format(name).structure_options()[-2:] == ("out_dims", "in_dims")


def test_tensorization_helpers():
    t = tensorization((16, 9, 3, 3), ("o", "i", "h", "w"), (2, 8), (9,), "demo")
    assert t.legs == ("o_0", "o_1", "i_0", "h", "w") and t.shape == (2, 8, 9, 3, 3)
    assert t.interleaved() == ("h", "w", "o_0", "i_0", "o_1")
    assert t.expand(["w", "i", "o"]) == ("w", "i_0", "o_0", "o_1")
    assert t.options == (("out_dims", (2, 8)), ("in_dims", (9,)))
    with pytest.raises(ValueError, match="split the first two legs; got shape"):
        tensorization((16,), ("o",), (4, 4), (1,), "demo")
    with pytest.raises(ValueError, match=r"^demo: the mode legs \['o_0'\] clash with the kept "
                       r"legs \('o_0', 'k'\)$"):  # fmt: skip
        tensorization((4, 3, 2, 1), ("o", "i", "o_0", "k"), (4,), (3,), "demo")
    split, opts = split_layout((16, 9), ("o", "i"), {"order": "oi", **DIMS}, ("order",), "demo")
    assert opts == {"order": "oi"} and split.dense_legs == ("o", "i")  # a string is the format's
    assert split_layout((16, 9), ("o", "i"), {"x": 1}, ("order",), "demo") == (None, {"x": 1})


def test_balanced_dims_rule():
    assert balanced_dims(64, 64) == ((4, 4, 4), (4, 4, 4))  # 3 modes from factors of 4
    assert balanced_dims(256, 32) == ((16, 16), (8, 4))  # 32 = 4 x 4 x 2: two modes
    assert balanced_dims(32, 64) == ((8, 4), (8, 8))  # the out side decides too
    assert balanced_dims(10, 9) == ((5, 2), (3, 3))
    assert balanced_dims(16, 3) is None and balanced_dims(1, 16) is None
    assert balanced_dims(12, 8, modes=3) == (balanced_factors(12, 3), balanced_factors(8, 3))
    assert balanced_dims(12, 8, modes=1) == ((12,), (8,))
    for bad in (0, True, "3", 2.0):
        with pytest.raises(ValueError, match=f"modes must be a positive int, got {bad!r}"):
            balanced_dims(12, 8, modes=bad)


@pytest.mark.parametrize("name", ["tt", "tr", "tucker"])
def test_trunc_reaches_the_tensor_of_modes(name):
    x = torch.randn(*KERNEL[0], generator=gen(8), dtype=F64)
    capped = build(name, x, KERNEL[1], trunc=2)
    assert max(capped.ranks) <= 2 < max(capped.structure.max_ranks)
    low = cp_weight(KERNEL[0], 2)  # CP rank 2 over the modes: every TT/Tucker rank <= 2
    loose = build(name, low, KERNEL[1], trunc=Truncation(rel_tol=1e-9))
    assert loose.error <= 1e-9 and max(loose.ranks) <= 2 and rel(loose.to_dense(), low) < 1e-9


def test_messages_of_the_format_name_the_caller():
    x = torch.randn(16, 9, dtype=F64)
    with pytest.raises(ValueError, match=r"^CP.from_dense: rank 37 exceeds 36"):
        get_format("cp").from_dense(x, ranks=37, legs=("out", "in"), **DIMS)
    with pytest.raises(ValueError, match=r"^Tucker.from_dense: method must be"):
        get_format("tucker").from_dense(x, legs=("out", "in"), method="x", **DIMS)
    with pytest.raises(ValueError, match=r"^TT.structure_for: order \('out_0',\) must be a perm"):
        get_format("tt").structure_for((16, 9), legs=("out", "in"), order=("out_0",), **DIMS)
