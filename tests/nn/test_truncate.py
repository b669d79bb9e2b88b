"""truncate_kernel: the values of its report and its kernels, dense and through a layer's bonds.

Complements the truncate_kernel tests of tests/nn/test_layers_inputs.py and tests/nn/test_model.py:
argument checks with their exact messages, mixed cut specifications, kernels of norm below 1,
rank-1 bonds and structures with a rank that induces no cut.
"""

import re

import pytest
import torch
from torch import nn

from tensornet.core.truncation import Truncation
from tensornet.formats import get_format
from tensornet.nn import TNConv2d, TNLinear, truncate_kernel
from tensornet.nn.truncate import bond_cuts

F64 = torch.float64
LEGS = ("out", "in", "kh", "kw")


def frob(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def conv64(seed=0, scale=1.0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 6, 3, dtype=F64)
    with torch.no_grad():
        conv.weight.mul_(scale)
    return conv


# -- argument checks, before any work -----------------------------------------------------------
@pytest.mark.parametrize("module, name", [(nn.ReLU(), "ReLU"), (nn.BatchNorm1d(3), "BatchNorm1d")])
def test_only_conv_and_linear_layers(module, name):
    # no weight at all, or a weight without the legs of a conv/linear kernel (1-d)
    message = f"truncate_kernel: expected a conv or linear layer, got {name}"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        truncate_kernel(module, ["out"], 2)


def test_transposed_convs_are_refused():
    message = "truncate_kernel: transposed convolutions are not supported"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        truncate_kernel(nn.ConvTranspose2d(4, 6, 3), ["out"], 2)


def test_no_cut_is_refused():
    message = "truncate_kernel: cuts must name at least one cut"
    for layer in (conv64(), TNConv2d(4, 6, 3, format="tucker2", ranks=2)):
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            truncate_kernel(layer, [], 2)


def test_chi_must_be_a_rank_or_a_policy_for_every_cut():
    conv = conv64()
    message = "truncate_kernel: chi must be an int or a Truncation for every cut"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        truncate_kernel(conv, [["out"], ["in"]], [2, None])
    with pytest.raises(ValueError, match=r"^chi as an int is a max_rank and must be >= 1, got 0$"):
        truncate_kernel(conv, ["out"], 0)
    with pytest.raises(TypeError, match=r"^chi must be a Truncation, an int \(max_rank\) or None"):
        truncate_kernel(conv, ["out"], 2.0)


# -- what is truncated ------------------------------------------------------------------------
def test_a_leg_name_among_lists_is_a_cut_of_its_own():
    conv = conv64(1)
    mixed, res = truncate_kernel(conv, [["out"], "in"], [3, 2])
    ref, ref_res = truncate_kernel(conv, [["out"], ["in"]], [3, 2])
    assert res.cuts == (("out",), ("in",)) and res.ranks == (3, 2)
    assert torch.equal(mixed.weight, ref.weight) and res.error == ref_res.error
    # a list of leg names is one cut; a string alone too
    assert truncate_kernel(conv, ["out", "in"], 2)[1].cuts == (("out", "in"),)
    assert truncate_kernel(conv, "kh", 2)[1].cuts == (("kh",),)


@pytest.mark.parametrize("scale", [1e-3, 0.5])
def test_errors_of_a_kernel_with_norm_below_one(scale):
    """The relative errors are ratios: a kernel of norm < 1 has them too (not 0)."""
    conv = conv64(2, scale)
    w = conv.weight.detach()
    assert 0 < float(w.norm()) < 1
    small, res = truncate_kernel(conv, ["out"], 2)
    s = torch.linalg.svdvals(w.reshape(6, -1))
    assert res.error == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-10)
    assert res.error > 0.1
    assert res.norm_kept == pytest.approx(float(s[:2].norm() / s.norm()), rel=1e-10)
    assert res.norm_kept < 1
    # through a compressed layer's bond: the step error and the total error
    layer = TNConv2d(4, 6, 3, format="tucker2", ranks=(4, 4), dtype=F64)
    with torch.no_grad():
        for p in layer.factors.values():
            p.mul_(scale)
    w = layer.weight.detach().clone()
    assert 0 < float(w.norm()) < 1
    small, res = truncate_kernel(layer, ["out"], 2)
    new = small.weight.detach()
    assert res.step_errors[0] == pytest.approx(frob(new, w), rel=1e-10) and res.error > 0.05
    assert res.error == pytest.approx(frob(new, w), rel=1e-10)
    assert res.norm_kept == pytest.approx(float(new.norm() / w.norm()), rel=1e-10)
    assert res.norm_kept < 1


def test_a_rank_one_bond():
    s = get_format("svd").structure_for((6, 4, 3, 3), (1,), legs=LEGS)
    assert {i: sorted(c) for i, c in bond_cuts(s).items()} == {0: ["out"]}
    torch.manual_seed(3)
    lin = TNLinear(5, 4, format="svd", ranks=1, dtype=F64)
    w = lin.weight.detach()
    same, res = truncate_kernel(lin, ["out"], 1)
    assert same.ranks == (1,) and res.ranks == (1,) and res.error < 1e-12
    torch.testing.assert_close(same.weight.detach(), w, rtol=1e-12, atol=1e-14)
    policy = Truncation(max_rank=3)
    assert truncate_kernel(lin, "in", policy)[1].ranks == (1,)


class ExtraRank:
    """A structure with an extra first rank that no leg follows (it induces no cut)."""

    def __init__(self, structure, extra=5):
        self.inner, self.ranks = structure, (extra, *structure.ranks)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def with_ranks(self, ranks):
        return ExtraRank(self.inner.with_ranks(tuple(ranks[1:])), ranks[0])


def test_a_rank_without_a_bond_is_skipped_and_the_later_ones_still_found():
    s = get_format("tucker2").structure_for((16, 8, 3, 3), (4, 3), legs=LEGS)
    found = {i: sorted(c) for i, c in bond_cuts(ExtraRank(s)).items()}
    assert found == {1: ["out"], 2: ["in"]}
