"""Data-aware errors for ``allocate(method="auto", data=...)``: each candidate by its output error.

:func:`output_errors` turns the input covariances of the layers (:mod:`tensornet.nn.covariance`,
gathered once from a few batches of the dense model's inputs) into an ``errors`` function of
:func:`~tensornet.nn.allocate`: a candidate's error is the relative error of the layer's output
on that data, ``||X (W - W')^T|| / ||X W^T||``, for the kernel ``W'`` that
``compress(model, allocation=..., data=...)`` builds: whitened for svd and Tucker-2
(:func:`~tensornet.nn.whiten.whitened_format`: the decomposition that minimises that error),
decomposed plainly for the other formats. A layer without a covariance (grouped, 1-d, 3-d and
transposed convs, or one with over :data:`~tensornet.nn.covariance.MAX_FEATURES` input features)
keeps its candidates' weight errors.

The errors are those of each layer alone on the dense model's inputs; ``compress`` with ``data``
fits each layer to the inputs the layers compressed before it give, which can only lower the
output error of the whole model further.

Speed: a layer's metric (its output energy, the root of its covariance) is computed once for
all its candidates, and a Tucker-2 candidate that cannot be on its family's frontier is not
decomposed: its kernel has rank at most ``m = min(r_out, r_in kh kw)``, so its output error is
at least the whitened svd's at rank ``m`` (Eckart-Young on ``X W^T``, :data:`_BOUND_MARGIN`
below it for rounding); where a cheaper Tucker-2 candidate (fewer parameters) already has a
smaller error, it gets that bound as its error, which drops it from the frontier as its true
error would (the chosen allocation is the same).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..formats import get_format
from ..weights import kernel_legs
from .alloc_auto import ErrorFn
from .alloc_candidates import Candidate, candidate_kernel
from .covariance import InputCovariance
from .whiten import WHITENED_FORMATS, Metric

#: Tucker-2's alternating sweeps, as ``whitened_format`` and ``compress(data=...)`` run them.
_SWEEPS = 2
#: How far (in squared relative error) a cheaper candidate's error must lie below a Tucker-2
#: candidate's bound for it to be skipped: far above the bound's rounding (~1e-13).
_BOUND_MARGIN = 1e-10

__all__ = ["candidate_output_error", "output_errors"]


def candidate_output_error(module: nn.Module, candidate: Candidate, cov: InputCovariance) -> float:
    """The relative output error on the calibration data of the kernel built for ``candidate``.

    Examples
    --------
    >>> import torch
    >>> from tensornet.nn.alloc_candidates import weight_candidates
    >>> from tensornet.nn.covariance import input_covariances
    >>> from tensornet.nn.whiten import output_error
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    >>> cov = input_covariances(net, torch.randn(32, 6) * torch.arange(1.0, 7.0))["0"]
    >>> rank1 = next(c for c in weight_candidates(net[0], ("svd",)) if c.ranks == (1,))
    >>> plain = output_error(net[0].weight, candidate_kernel(net[0], rank1), cov)
    >>> candidate_output_error(net[0], rank1, cov) <= plain  # whitened: never worse
    True
    """
    return _scored(module, Metric(module.weight.detach(), cov), candidate)


def _scored(module: nn.Module, metric: Metric, candidate: Candidate) -> float:
    """The output error of ``candidate``'s kernel in the layer's ``metric``.

    Whitened formats: the error of what :func:`~tensornet.nn.whiten.whitened_format` returns
    (computed while choosing it); the others: of :func:`candidate_kernel`.
    """
    w = module.weight.detach()
    if candidate.format not in WHITENED_FORMATS:  # the dense candidate too: its kernel is w
        return metric.error(candidate_kernel(module, candidate))
    legs = kernel_legs(w.ndim)  # the layer's own legs, as whitened_format takes them
    options = dict(candidate.options)
    plain = get_format(candidate.format).from_dense(w, ranks=candidate.ranks, legs=legs, **options)
    return metric.whitened(plain, _SWEEPS, w.dtype)[1]


def output_errors(covariances: Mapping[str, InputCovariance]) -> ErrorFn:
    """An ``errors`` function of :func:`~tensornet.nn.allocate`: output errors on the data.

    Layers missing from ``covariances`` keep their candidates' weight errors. The layer's
    metric (its output energy, the root of its covariance) is computed once for all its
    candidates.

    Examples
    --------
    >>> import torch
    >>> from tensornet.nn import allocate
    >>> from tensornet.nn.covariance import input_covariances
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
    ...                           torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> covs = input_covariances(net, torch.randn(64, 8), ["2"])
    >>> alloc = allocate(net, 0.8, "auto", skip=("first", "last"), errors=output_errors(covs))
    >>> sorted(alloc.layers)
    ['2']
    """

    def errors(name: str, module: nn.Module, candidates: Sequence[Candidate]) -> list[float]:
        cov = covariances.get(name)
        if cov is None:
            return [c.error for c in candidates]
        with torch.no_grad():
            return _layer_errors(module, Metric(module.weight.detach(), cov), candidates)

    return errors


def _layer_errors(
    module: nn.Module, metric: Metric, candidates: Sequence[Candidate]
) -> list[float]:
    """Every candidate's output error; Tucker-2 ones off their frontier get their bound."""
    tails = _tails(metric) if metric.pair is None and metric.total > 0 else None
    k = math.prod(module.weight.shape[2:])
    out = [0.0] * len(candidates)
    least: dict = {}  # family -> least error of the candidates with fewer parameters
    upto: dict = {}  # family -> (params, least error up to and including them)
    for i in sorted(range(len(candidates)), key=lambda i: candidates[i].params):
        c = candidates[i]
        params, error = upto.get(c.family, (None, math.inf))
        if params != c.params:  # a larger size: the errors so far are all of cheaper ones
            least[c.family] = error
        if tails is not None and c.format == "tucker2":
            bound = float(tails[min(c.ranks[0], c.ranks[1] * k)])  # r_out <= out: in range
            if least[c.family] ** 2 < bound - _BOUND_MARGIN:
                out[i] = math.sqrt(bound)
                continue
        out[i] = _scored(module, metric, c)
        upto[c.family] = (c.params, min(error, out[i]))
    return out


def _tails(metric: Metric) -> torch.Tensor:
    """``||s[r:]||^2 / ||s||^2`` for ``r = 0 .. out``: ``s`` the singular values of ``X W^T``.

    ``||s||^2`` is the metric's total (``> 0``): ``tr(W C W^T)``.
    """
    w, c = metric.w, metric.c
    energies = torch.linalg.eigvalsh(w @ ((c + c.T) / 2) @ w.T).clamp(min=0).flip(0)
    tail = energies.flip(0).cumsum(0).flip(0)
    return torch.cat([tail, tail.new_zeros(1)]) / metric.total
