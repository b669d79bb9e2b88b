"""allocate's pieces: grouped costs priced from the structure, the searches, the steps."""

import math

import pytest
import torch
from torch import nn

from tensornet.formats import get_format
from tensornet.formats.grouped import grouped_params
from tensornet.nn.alloc_layer import GroupedLayer

F64 = torch.float64


def layer_of(shape):
    torch.manual_seed(sum(shape))
    if len(shape) == 2:
        return nn.Linear(shape[1], shape[0], dtype=F64)
    return nn.Conv2d(shape[1], shape[0], shape[2:], dtype=F64)


@pytest.mark.parametrize("shape", [(24, 12, 3, 3), (16, 8, 1, 1), (10, 6), (8, 4, 2, 3)])
def test_alds_prices_grouped_layers_by_the_structure_count(shape):
    """ALDS's own count ``j (k f + c k1 k2)`` equals the grouped format's for every (k, j)."""
    module = layer_of(shape)
    f, c, rest = shape[0], shape[1], math.prod(shape[2:])
    ks = [k for k in range(1, c + 1) if c % k == 0]
    layer = GroupedLayer("x", module, ks, "params", "true", None)
    legs = ("out", "in", "kh", "kw")[: len(shape)]
    grouped = get_format("grouped")
    for k in ks:
        top = layer.max_rank(k)
        for j in sorted({1, min(2, top), top // 2 or 1, top}):
            formula = j * (k * f + c * rest)
            built = grouped.from_dense(module.weight.detach(), ranks=j, channel_groups=k, legs=legs)
            assert layer.params(j, k) == formula == built.num_params, (k, j)
            assert formula == grouped_params(shape, k, j)
            dense = f * c * rest
            assert layer.is_dense(j, k) == (formula >= dense), (k, j)
            assert layer.cost(j, k) == min(formula, dense), (k, j)
