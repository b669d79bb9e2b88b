"""The contract every format shares: legs, sizes, errors, casting, fraction."""

import math

import pytest
import torch

from tensornet import TensorNetwork
from tensornet.formats import CP, HT, TT, Format, Tucker

from .helpers import F64, gen, rel_err

LEGS = ("out", "in", "kh", "kw")
BUILDERS = {
    "tt": lambda x, **kw: TT.from_dense(x, legs=LEGS, **kw),
    "tucker": lambda x, **kw: Tucker.from_dense(x, legs=LEGS, **kw),
    "hooi": lambda x, **kw: Tucker.from_dense(x, legs=LEGS, method="hooi", max_iter=3, **kw),
    "ht": lambda x, **kw: HT.from_dense(x, legs=LEGS, **kw),
    "cp": lambda x, **kw: CP.from_dense(x, legs=LEGS, max_iter=5, **kw),
}


@pytest.fixture
def kernel():
    return torch.randn(8, 6, 3, 3, generator=gen(0), dtype=F64)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_shared_contract(name, kernel):
    fmt = BUILDERS[name](kernel, fraction=0.5)
    assert isinstance(fmt, Format)
    assert isinstance(fmt.network, TensorNetwork)
    assert sorted(fmt.network.open_legs) == sorted(LEGS)
    assert fmt.legs == LEGS and fmt.shape == (8, 6, 3, 3)
    assert fmt.num_params <= 0.5 * kernel.numel()
    assert fmt.compression == pytest.approx(kernel.numel() / fmt.num_params)
    assert fmt.error == pytest.approx(rel_err(kernel, fmt.to_dense()), rel=1e-6, abs=1e-12)
    # contracting the network directly gives the dense tensor
    dense = fmt.network.contract(output=LEGS).tensor
    torch.testing.assert_close(dense, fmt.to_dense())
    f32 = fmt.to(dtype=torch.float32)
    assert f32.to_dense().dtype == torch.float32 and fmt.to_dense().dtype == F64
    torch.testing.assert_close(f32.to_dense(), fmt.to_dense().float(), rtol=1e-4, atol=1e-5)
    assert type(fmt).__name__ in repr(fmt)


@pytest.mark.parametrize("name", ["tt", "tucker", "ht"])
def test_truncate_reduces_parameters(name, kernel):
    fmt = BUILDERS[name](kernel)
    small = fmt.truncate(2)
    assert max(small.ranks) <= 2 and small.num_params < fmt.num_params
    assert small.error == pytest.approx(
        rel_err(fmt.to_dense(), small.to_dense()), rel=1e-6, abs=1e-10
    )


@pytest.mark.parametrize("name", list(BUILDERS))
def test_integer_input_and_default_legs(name):
    x = torch.arange(24).reshape(2, 3, 4)
    build = {"tt": TT, "tucker": Tucker, "hooi": Tucker, "ht": HT, "cp": CP}[name]
    kw = {"ranks": 2} if name == "cp" else {}
    fmt = build.from_dense(x, **kw)
    assert fmt.legs == ("d0", "d1", "d2") and fmt.dtype.is_floating_point
    if name != "cp":
        assert rel_err(x.to(fmt.dtype), fmt.to_dense()) < 1e-5


def test_fraction_one_allows_the_full_dense_size(kernel):
    tt = TT.from_dense(kernel, fraction=1.0)
    assert tt.num_params <= math.prod(kernel.shape)
