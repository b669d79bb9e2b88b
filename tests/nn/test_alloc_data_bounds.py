"""auto with data, made faster: values pinned against the plain computation of each error.

The layer's Metric is shared by its candidates, the whitened error comes from the choice, and a
Tucker-2 candidate off its family's frontier gets an Eckart-Young bound instead of its
decomposition: every other error is the one computed afresh (float64 layers: to 1e-10), the
bounds lie below the true errors and above a cheaper candidate's, and the family frontiers are
the same.
"""

import math

import pytest
import torch
from torch import nn

import tensornet.nn.alloc_candidates as alloc_candidates
import tensornet.nn.alloc_data as alloc_data
from tensornet.nn.alloc_candidates import candidate_kernel, family_frontiers, weight_candidates
from tensornet.nn.alloc_data import output_errors
from tensornet.nn.covariance import InputCovariance, input_covariances
from tensornet.nn.whiten import Metric, output_error, whitened_format

F64 = torch.float64


def _layer(seed=0, c=12, f=16):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, f, 3, padding=1).double()
    mix = torch.randn(c, c, dtype=F64) * torch.logspace(0, -2, c, dtype=F64)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(24, c, 6, 6, dtype=F64), mix)
    return conv, input_covariances(nn.Sequential(conv), x)["0"]


def _reference(conv, c, cov):
    """The error as computed before: the kernel built afresh, then output_error."""
    w = conv.weight.detach()
    if c.format in ("svd", "tucker2"):
        legs = ("out", "in", "kh", "kw")
        built = whitened_format(w, c.format, cov, ranks=c.ranks, legs=legs, **dict(c.options))
        return output_error(w, built.to_dense().reshape(w.shape), cov)
    return output_error(w, candidate_kernel(conv, c), cov)


@pytest.mark.parametrize("seed", range(2))
def test_errors_are_the_plain_ones_or_bounds_that_leave_the_frontiers_unchanged(seed):
    conv, cov = _layer(seed)
    found = weight_candidates(conv)
    got = output_errors({"x": cov})("x", conv, found)
    want = [_reference(conv, c, cov) for c in found]
    bounded = [i for i, (a, b) in enumerate(zip(got, want)) if abs(a - b) > 1e-10]
    assert bounded and all(found[i].format == "tucker2" for i in bounded)
    for i in bounded:
        cheaper = [
            want[j] for j, c in enumerate(found)
            if c.family == found[i].family and c.params < found[i].params
        ]  # fmt: skip
        assert min(cheaper) < got[i] <= want[i] + 1e-12
    mine = family_frontiers([c.with_error(e) for c, e in zip(found, got)])
    theirs = family_frontiers([c.with_error(e) for c, e in zip(found, want)])
    assert [(c.label, c.ranks, c.error) for c in mine] == [
        (c.label, c.ranks, c.error) for c in theirs
    ]


def test_the_bound_is_the_whitened_svd_at_the_kernel_rank():
    conv, cov = _layer(1)
    metric = Metric(conv.weight.detach(), cov)
    tails = alloc_data._tails(metric)
    w = conv.weight.detach().reshape(16, -1)
    rows = torch.linalg.cholesky(cov.matrix).T  # rows R with R^T R = C: ||R D^T|| = output
    s = torch.linalg.svdvals(rows @ w.T)
    want = torch.cat([(s**2).flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=F64)]) / (s**2).sum()
    assert torch.allclose(tails, want, rtol=1e-9, atol=1e-14) and tails.shape == (17,)


def test_no_bounds_with_a_cross_covariance_and_values_as_computed_afresh():
    conv, cov = _layer(2)
    g = torch.Generator().manual_seed(5)
    shift = torch.eye(cov.features, dtype=F64) + 0.05 * torch.randn(
        cov.features, cov.features, generator=g, dtype=F64
    )
    paired = InputCovariance(cov.matrix, cov.rows, cov.matrix @ shift, shift.T @ cov.matrix @ shift)
    found = weight_candidates(conv, ("svd", "tucker2", "cp"))
    got = output_errors({"x": paired})("x", conv, found)
    want = [_reference(conv, c, paired) for c in found]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-10


def test_metric_error_is_output_error_with_and_without_cross():
    conv, cov = _layer(3)
    w = conv.weight.detach()
    approx = w + 0.01 * torch.randn_like(w)
    paired = InputCovariance(cov.matrix, cov.rows, cov.matrix * 0.9, cov.matrix * 1.1)
    for given in (cov, paired, cov.matrix):
        metric = Metric(w, given)
        assert metric.error(approx) == output_error(w, approx, given)
    silent = Metric(torch.zeros_like(w), cov)  # a kernel with no output on the data
    assert silent.error(torch.zeros_like(w)) == 0.0 and silent.error(approx) == math.inf
    assert Metric(w, torch.zeros_like(cov.matrix)).roots() is None
    with pytest.raises(ValueError, match="approx has shape"):
        Metric(w, cov).error(w[:3])


def test_weight_candidates_are_the_same_without_shared_steps(monkeypatch):
    conv, _ = _layer(4)
    conv.weight.data = conv.weight.data * torch.logspace(0, -2, 12, dtype=F64)[None, :, None, None]
    shared = weight_candidates(conv)
    monkeypatch.setattr(alloc_candidates, "shared_steps", _nothing)
    assert weight_candidates(conv) == shared


class _nothing:
    def __init__(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
