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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .alloc_auto import ErrorFn
from .alloc_candidates import Candidate, candidate_kernel
from .covariance import InputCovariance
from .whiten import WHITENED_FORMATS, output_error, whitened_format

__all__ = ["candidate_output_error", "output_errors"]


def candidate_output_error(module: nn.Module, candidate: Candidate, cov: InputCovariance) -> float:
    """The relative output error on the calibration data of the kernel built for ``candidate``.

    Examples
    --------
    >>> import torch
    >>> from tensornet.nn.alloc_candidates import weight_candidates
    >>> from tensornet.nn.covariance import input_covariances
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 4))
    >>> cov = input_covariances(net, torch.randn(32, 6) * torch.arange(1.0, 7.0))["0"]
    >>> rank1 = next(c for c in weight_candidates(net[0], ("svd",)) if c.ranks == (1,))
    >>> plain = output_error(net[0].weight, candidate_kernel(net[0], rank1), cov)
    >>> candidate_output_error(net[0], rank1, cov) <= plain  # whitened: never worse
    True
    """
    w = module.weight.detach()
    if candidate.format in WHITENED_FORMATS:  # the layer's own legs: KERNEL_LEGS by ndim
        options = dict(candidate.options)
        found = whitened_format(w, candidate.format, cov, ranks=candidate.ranks, **options)
        approx = found.to_dense().reshape(w.shape)
    else:  # the dense candidate too: its kernel is the layer's
        approx = candidate_kernel(module, candidate)
    return output_error(w, approx, cov)


def output_errors(covariances: Mapping[str, InputCovariance]) -> ErrorFn:
    """An ``errors`` function of :func:`~tensornet.nn.allocate`: output errors on the data.

    Layers missing from ``covariances`` keep their candidates' weight errors.

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
            return [candidate_output_error(module, c, cov) for c in candidates]

    return errors
