"""The contract every registered format shares: structure, factors, legs, sizes, errors, casting,
fraction budgets and serialisation. New formats are picked up from the registry."""

import json
import math

import pytest
import torch

from tensornet import TensorNetwork, Truncation
from tensornet.core.linalg import truncated_svd
from tensornet.core.split import fresh_names
from tensornet.formats import (
    Factor,
    Format,
    Structure,
    format_names,
    fraction_ranks,
    get_format,
    register_format,
)
from tensornet.formats import structure as structure_module
from tensornet.formats.base import Layout
from tensornet.formats.steps import tail_norm

from .helpers import F64, gen, rel_err


class Leading(Format):
    """The contract's example format: the first leg compressed by its leading singular vectors.

    A new format is one file like this: its layout (``_layout``: maximal ranks, the factors at
    given ranks, its options), its algorithm (``_decompose``) and :meth:`truncate`. Everything
    else (checks, ``ranks``/``fraction``, structure, network, sizes, casting) is the base's.
    """

    @classmethod
    def _layout(cls, dense):
        shape, legs, _ = dense
        r = fresh_names(["r"], legs)[0]

        def factors(ranks):
            return (
                Factor("U", (legs[0], r), (shape[0], *ranks)),
                Factor("core", (r, *legs[1:]), (*ranks, *shape[1:])),
            )

        return Layout((min(shape[0], math.prod(shape[1:])),), factors)

    @classmethod
    def _decompose(cls, x, req):
        trunc = req.trunc if req.caps is None else Truncation(max_rank=req.caps[0])
        u, s, vh, s_full = truncated_svd(x.reshape(x.shape[0], -1), trunc)
        core = (s.to(vh.dtype)[:, None] * vh).reshape(-1, *x.shape[1:])
        norm = float(s_full.norm())
        error = tail_norm(s_full, s.shape[0]) / norm if norm > 0 else 0.0
        return cls(req.full.with_ranks(s.shape), {"U": u, "core": core}, error)

    def truncate(self, trunc=None, *, ranks=None):
        return type(self).from_dense(self.to_dense(), trunc, ranks, legs=self.legs)


@pytest.fixture(autouse=True)
def example_format(monkeypatch):
    """The example format is registered for the tests of this file only."""
    monkeypatch.setattr(structure_module, "_REGISTRY", dict(structure_module._REGISTRY))
    return register_format("example")(Leading)


LEGS = ("out", "in", "kh", "kw")
SHAPE = (8, 6, 3, 3)
# options that make each format meaningful on a kernel (others take the defaults)
OPTIONS = {
    "tt": {"order": ("in", "kh", "kw", "out")},
    "ttmatrix": {"out_dims": (2, 4), "in_dims": (2, 3)},
    "ht": {},
    "tucker": {},
    "tucker2": {},
    "cp": {"max_iter": 5},
    "tr": {},
    "svd": {},
    "grouped": {"channel_groups": 3},
    "cut": {"cuts": (("out", "kh"),)},
    "example": {},
}
STRUCTURE_ONLY = {"max_iter"}  # options of the algorithm, not of the structure
EXACT_AT_FULL_RANK = set(OPTIONS) - {"cp"}


def build(name, x, **kw):
    return get_format(name).from_dense(x, legs=LEGS, **OPTIONS[name], **kw)


def structure_options(name):
    return {k: v for k, v in OPTIONS[name].items() if k not in STRUCTURE_ONLY}


@pytest.fixture
def kernel():
    return torch.randn(*SHAPE, generator=gen(0), dtype=F64)


def test_every_registered_format_is_covered():
    assert set(format_names()) == set(OPTIONS)


def test_example_format_is_the_truncated_svd_of_the_first_unfolding(kernel):
    """The example format's numbers: Eckart-Young on ``out | in, kh, kw``, its factor layout."""
    fmt = Leading.from_dense(kernel, ranks=3, legs=LEGS)
    s = torch.linalg.svdvals(kernel.reshape(SHAPE[0], -1))
    assert fmt.error == pytest.approx(float(s[3:].norm() / s.norm()), rel=1e-12)
    assert fmt.structure.max_ranks == (8,) and fmt.num_params == 8 * 3 + 3 * 6 * 9
    assert fmt.network.open_legs == ("out", "in", "kh", "kw")
    small = fmt.truncate(ranks=1)
    assert small.ranks == (1,) and small.error == pytest.approx(
        float(s[1:3].norm() / s[:3].norm()), rel=1e-10
    )


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_kernel_defaults_are_options_of_the_format(name):
    """A format's layer defaults are structure options it accepts (TT and TR order the train)."""
    cls = get_format(name)
    s = cls.structure_for(SHAPE, legs=LEGS, **cls.kernel_defaults)
    assert dict(s.options).items() >= dict(cls.kernel_defaults).items()
    expected = {"order": ("in", "kh", "kw", "out")} if name in ("tt", "tr") else {}
    assert dict(cls.kernel_defaults) == expected


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_shared_contract(name, kernel):
    fmt = build(name, kernel, fraction=0.5)
    assert isinstance(fmt, Format) and type(fmt).name == name
    assert isinstance(fmt.network, TensorNetwork)
    s = fmt.structure
    assert isinstance(s, Structure) and s.format == name
    assert sorted(fmt.network.open_legs) == sorted(s.mode_legs)
    assert fmt.legs == LEGS == s.legs and fmt.shape == SHAPE == s.shape
    assert fmt.ranks == s.ranks
    # the structure is the true storage and describes the tensors exactly
    tensors = fmt.factor_tensors()
    assert list(tensors) == [f.name for f in s.factors]
    assert [tuple(t.shape) for t in tensors.values()] == [f.shape for f in s.factors]
    assert fmt.num_params == s.num_params == sum(t.numel() for t in tensors.values())
    assert fmt.num_params <= 0.5 * kernel.numel()
    assert fmt.compression == pytest.approx(kernel.numel() / fmt.num_params)
    dense = fmt.to_dense()
    assert fmt.error == pytest.approx(rel_err(kernel, dense), rel=1e-6, abs=1e-12)
    # three ways to the same dense tensor: to_dense, the structure's einsum, the network
    torch.testing.assert_close(s.contract(tensors), dense, rtol=1e-12, atol=1e-12)
    net = fmt.network.contract(output=s.mode_legs).tensor.reshape(SHAPE)
    torch.testing.assert_close(net, dense, rtol=1e-12, atol=1e-12)
    # the factors rebuild the format
    again = type(fmt).from_factors(s, tensors)
    torch.testing.assert_close(again.to_dense(), dense, rtol=0, atol=0)
    assert again.structure == s
    f32 = fmt.to(dtype=torch.float32)
    assert f32.to_dense().dtype == torch.float32 and fmt.to_dense().dtype == F64
    torch.testing.assert_close(f32.to_dense(), dense.float(), rtol=1e-4, atol=1e-5)
    assert type(fmt).__name__ in repr(fmt)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_structure_is_known_before_decomposing(name, kernel):
    fmt = build(name, kernel, fraction=0.5)
    cls = get_format(name)
    priced = cls.structure_for(SHAPE, fmt.ranks, legs=LEGS, **structure_options(name))
    assert priced == fmt.structure
    # JSON round trip (what a saved layer stores)
    text = json.dumps(priced.to_dict())
    assert Structure.from_dict(json.loads(text)) == priced
    # ranks=None gives the maximal ranks, and with_ranks changes only the ranks
    full = cls.structure_for(SHAPE, None, legs=LEGS, **structure_options(name))
    assert full.ranks == full.max_ranks
    assert full.with_ranks(fmt.ranks) == priced


@pytest.mark.parametrize("name", sorted(EXACT_AT_FULL_RANK))
def test_full_rank_is_exact(name, kernel):
    fmt = build(name, kernel)
    assert rel_err(kernel, fmt.to_dense()) < 1e-12 and fmt.error < 1e-12


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.9])
def test_fraction_is_the_largest_uniform_cap_within_budget(name, fraction):
    cls = get_format(name)
    opts = structure_options(name)
    ranks = fraction_ranks(name, SHAPE, fraction, legs=LEGS, **opts)
    budget = fraction * math.prod(SHAPE)
    assert cls.structure_for(SHAPE, ranks, legs=LEGS, **opts).num_params <= budget
    tops = cls.structure_for(SHAPE, None, legs=LEGS, **opts).max_ranks
    cap = max(ranks)
    assert ranks == tuple(min(cap, t) for t in tops)
    if cap < max(tops):  # one step up breaks the budget: the cap is the largest
        bigger = tuple(min(cap + 1, t) for t in tops)
        assert cls.structure_for(SHAPE, bigger, legs=LEGS, **opts).num_params > budget


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_truncate_to_rank_one_reduces_parameters(name, kernel):
    fmt = build(name, kernel, fraction=0.9)
    small = fmt.truncate(Truncation(max_rank=1))
    assert max(small.ranks) <= 1 or name == "tr"  # TR keeps r0 * r1 = 1 as (1, 1)
    assert small.num_params < fmt.num_params
    assert small.error == pytest.approx(
        rel_err(fmt.to_dense(), small.to_dense()), rel=1e-6, abs=1e-10
    )
    via_ranks = fmt.truncate(ranks=small.ranks)
    torch.testing.assert_close(via_ranks.to_dense(), small.to_dense())


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_integer_input_and_bad_fraction(name):
    x = torch.arange(math.prod(SHAPE)).reshape(SHAPE)
    kw = {"ranks": 2} if name == "cp" else {}
    fmt = build(name, x, **kw)
    assert fmt.dtype.is_floating_point
    if name != "cp":
        assert rel_err(x.to(fmt.dtype), fmt.to_dense()) < 1e-5
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            build(name, x, fraction=bad)
    with pytest.raises(ValueError, match="at most one of"):
        build(name, x, fraction=0.5, ranks=2)


def test_unknown_format_names_the_registered_ones():
    with pytest.raises(ValueError, match="registered formats are"):
        get_format("tensor-train")


def test_fraction_one_allows_the_full_dense_size(kernel):
    tt = get_format("tt").from_dense(kernel, fraction=1.0)
    assert tt.num_params <= math.prod(kernel.shape)
