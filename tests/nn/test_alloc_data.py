"""allocate(method="auto", data=...): candidates scored by their output error on the data."""

import pytest
import torch
from torch import nn

from tensornet.nn import allocate, compress
from tensornet.nn.alloc_candidates import candidate_kernel, weight_candidates
from tensornet.nn.alloc_data import candidate_output_error, output_errors
from tensornet.nn.covariance import input_covariances, layer_rows
from tensornet.nn.whiten import whitened_format

F64 = torch.float64


def _low_rank_inputs(n=96, features=16, rank=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g, dtype=F64) @ torch.randn(
        rank, features, generator=g, dtype=F64
    )


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 2)).double()


def _direct(module, approx, x):
    """||X (W - W')^T|| / ||X W^T|| from the layer's actual input rows."""
    rows = layer_rows(module, x)
    w = module.weight.detach().reshape(module.weight.shape[0], -1)
    d = w - approx.reshape(w.shape)
    return float((rows @ d.T).norm() / (rows @ w.T).norm())


@pytest.mark.parametrize("fmt", ["svd", "tucker2", "cp", "tt"])
def test_candidate_errors_are_the_direct_output_errors_of_the_built_kernels(fmt):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    x = torch.randn(8, 4, 7, 7, dtype=F64) * torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=F64).reshape(
        1, 4, 1, 1
    )
    cov = input_covariances(nn.Sequential(conv), x)["0"]
    found = [c for c in weight_candidates(conv, (fmt,)) if c.format == fmt][:4]
    assert found
    for c in found:
        if fmt in ("svd", "tucker2"):
            legs = ("out", "in", "kh", "kw")
            built = whitened_format(
                conv.weight.detach(), fmt, cov, ranks=c.ranks, legs=legs, **dict(c.options)
            )
            approx = built.to_dense()
        else:
            approx = candidate_kernel(conv, c)
        want = _direct(conv, approx, x)
        assert candidate_output_error(conv, c, cov) == pytest.approx(want, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_whitened_candidates_are_never_worse_than_plain_on_the_data(seed):
    torch.manual_seed(seed)
    lin = nn.Linear(12, 10).double()
    x = torch.randn(64, 12, dtype=F64) @ torch.randn(12, 12, dtype=F64)  # correlated inputs
    cov = input_covariances(nn.Sequential(lin), x)["0"]
    for c in weight_candidates(lin, ("svd",)):
        plain = _direct(lin, candidate_kernel(lin, c), x)
        assert candidate_output_error(lin, c, cov) <= plain + 1e-10


def test_layers_without_a_covariance_keep_their_weight_errors():
    grouped = nn.Conv2d(4, 4, 3, groups=2).double()
    found = weight_candidates(grouped, ("svd",))
    assert output_errors({})("g", grouped, found) == [c.error for c in found]
    # a grouped conv has no rows: input_covariances leaves it out
    covs = input_covariances(nn.Sequential(grouped), torch.randn(2, 4, 5, 5, dtype=F64))
    assert covs == {}


def test_auto_with_data_scores_by_the_data_and_compress_with_data_applies_it():
    """Inputs in a 4-dim subspace (3 directions + the bias): svd rank 4 is exact on the data
    (up to the whitening's ridge), far from exact on the weights."""
    net, x = _net(), _low_rank_inputs()
    # 0.78 of the parameters: the middle layer fits svd rank 4 (306 fixed + 4 * 32 + 16)
    plain = allocate(net, 0.78, "auto", formats=("svd",), skip=("first", "last"))
    aware = allocate(net, 0.78, "auto", formats=("svd",), skip=("first", "last"), data=x)
    assert plain.layers["1"].ranks == aware.layers["1"].ranks == (4,)
    assert plain.layers["1"].error > 0.5 and aware.layers["1"].error < 1e-4
    with torch.no_grad():
        y = net(x)
        fitted = compress(net, allocation=aware, data=x)[0](x)
        unfitted = compress(net, allocation=plain)[0](x)
    assert float((fitted - y).norm() / y.norm()) < 1e-4
    assert float((unfitted - y).norm() / y.norm()) > 0.1


def test_data_is_refused_with_errors_or_another_method():
    net, x = _net(), _low_rank_inputs()
    with pytest.raises(ValueError, match=r"give errors or data, not both"):
        allocate(net, 0.5, "auto", data=x, errors=lambda n, m, c: [0.0] * len(c))
    with pytest.raises(ValueError, match=r"data apply to method='auto' only"):
        allocate(net, 0.5, "alds", data=x)
