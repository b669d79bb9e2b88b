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
from tensornet.nn.alloc_candidates import (
    Candidate,
    candidate_kernel,
    family_frontiers,
    weight_candidates,
)
from tensornet.nn.alloc_data import candidate_output_error, output_errors
from tensornet.nn.covariance import InputCovariance, input_covariances
from tensornet.nn.whiten import Metric, output_error, whitened_format

F64 = torch.float64


def _layer(seed=0, c=12, f=16):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, f, 3, padding=1).double()
    mix = torch.randn(c, c, dtype=F64) * torch.logspace(0, -2, c, dtype=F64)
    x = torch.einsum("nchw,cd->ndhw", torch.randn(24, c, 6, 6, dtype=F64), mix)
    return conv, input_covariances(nn.Sequential(conv), x)["0"]


#: (label, ranks, weight error, output error) of candidates of ``_layer(0)``, as computed
#: before the speed work (commit 0c2c64c: every kernel decomposed afresh, every error computed
#: on its own): the first, middle and last candidate of each family.
PINNED = [
    ("dense", (), 0.0, 0.0),
    ("svd", (1,), 0.946284159744084, 0.9032435077863368),
    ("svd", (7,), 0.640334661709028, 0.44521904056482975),
    ("svd", (13,), 0.30684261292016274, 0.15093911893922726),
    ("grouped[k=2]", (1,), 0.9356578240449376, 0.947525988631499),
    ("grouped[k=2]", (7,), 0.5835690519997038, 0.6170319701873673),
    ("grouped[k=2]", (12,), 0.30178402785823005, 0.3085310439536738),
    ("grouped[k=3]", (1,), 0.9272774082526384, 0.9450453188569958),
    ("grouped[k=3]", (6,), 0.5991144318474745, 0.6120193897489756),
    ("grouped[k=3]", (11,), 0.31665603608183795, 0.3305345332643943),
    ("grouped[k=4]", (1,), 0.9152740098478334, 0.9206074541238126),
    ("grouped[k=4]", (6,), 0.5555126940917685, 0.5682501912083548),
    ("grouped[k=4]", (10,), 0.3205290617501408, 0.3376756893493368),
    ("grouped[k=6]", (1,), 0.9011030566373197, 0.9139743585022688),
    ("grouped[k=6]", (5,), 0.5679271145409583, 0.5900737983306497),
    ("grouped[k=6]", (8,), 0.3586803913102636, 0.37713845896966863),
    ("grouped[k=12]", (1,), 0.8635599415167202, 0.890169363898952),
    ("grouped[k=12]", (3,), 0.6241582651892321, 0.6464912145627646),
    ("grouped[k=12]", (5,), 0.4130520948374081, 0.4336766817030401),
    ("tucker2", (1, 1), 0.9900526153329731, 0.9164390016329619),
    ("tucker2", (7, 8), 0.7294488581780966, 0.44526234392537906),
    ("tucker2", (15, 10), 0.32542889369331024, 0.06211275205940077),
    ("tucker", (1, 1, 1, 1), 0.9972715301083707, 1.0033133725617867),
    ("tucker", (7, 6, 3, 3), 0.7820218549691957, 0.798402893830633),
    ("tucker", (13, 11, 3, 3), 0.3494671668984923, 0.3444131336558316),
    ("tt[in,kh,kw,out]", (10, 17, 11), 0.5734653438714553, 0.5919924356438832),
    ("tt[in,kh,kw,out]", (8, 10, 5), 0.8329142392810598, 0.8205498448740283),
    ("tt[kh,kw,in,out]", (3, 8, 12), 0.45115487081753197, 0.42437220715982393),
    ("tt[kh,kw,in,out]", (3, 7, 8), 0.6635058675104796, 0.6670222614493604),
    ("tt[in,out,kh,kw]", (10, 8, 3), 0.39654079480611637, 0.3640942701230347),
    ("tt[in,out,kh,kw]", (8, 6, 2), 0.7443633729034937, 0.7174113249702753),
    ("ht", (8, 8, 12, 9, 3, 3), 0.5662426944898376, 0.5099111369754119),
    ("tr[in,kh,kw,out]", (2, 5, 11, 13), 0.6053501034418299, 0.5805551373881914),
    ("tr[in,kh,kw,out]", (2, 4, 6, 4), 0.8796065692633062, 0.8653261291293513),
    ("cp", (1,), 0.9803809740685329, 0.961788566185131),
    ("cp", (4,), 0.9256003384873559, 0.9250758894816169),
    ("cp", (25,), 0.5208015893747723, 0.4784710368328008),
]


def test_errors_are_pinned_to_the_values_before_the_speed_work():
    conv, cov = _layer(0)
    found = {(c.label, c.ranks): c for c in weight_candidates(conv)}
    for label, ranks, weight, output in PINNED:
        c = found[(label, ranks)]
        assert c.error == pytest.approx(weight, rel=0, abs=1e-10)
        assert candidate_output_error(conv, c, cov) == pytest.approx(output, rel=0, abs=1e-10)


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


def test_bounds_are_the_whitened_svd_tails_at_the_tucker2_kernel_rank(monkeypatch):
    conv, cov = _layer(5, c=2, f=32)  # kh kw = 9: r_in = 1 allows rank 9 of 32
    w = conv.weight.detach().reshape(32, -1)
    rows = torch.linalg.cholesky(cov.matrix).T  # R^T R = C: ||R D^T|| is the output error
    s2 = torch.linalg.svdvals(rows @ w.T) ** 2
    ranks = [(1, 1), (4, 1), (12, 1), (32, 1), (8, 2), (32, 2)]
    found = [Candidate("tucker2", r, (), 10 + i, 0.5) for i, r in enumerate(ranks)]  # W: rank 18
    monkeypatch.setattr(alloc_data, "_scored", lambda module, metric, c: 0.0)  # the first: exact
    for scale in (1.0, 1e-8):  # a total output energy below 1 too
        scaled = InputCovariance(cov.matrix * scale, cov.rows)
        got = output_errors({"x": scaled})("x", conv, found)
        assert got[0] == 0.0
        for (r_out, r_in), value in zip(ranks[1:], got[1:]):
            m = min(r_out, 9 * r_in)
            assert value == pytest.approx(math.sqrt(float(s2[m:].sum() / s2.sum())), rel=1e-6)


def test_candidates_in_any_order_get_the_same_errors_and_a_wide_margin_bounds_none(monkeypatch):
    conv, cov = _layer(1)
    found = weight_candidates(conv, ("svd", "tucker2"))
    fn = output_errors({"x": cov})
    got = fn("x", conv, found)
    backwards = fn("x", conv, found[::-1])[::-1]
    assert backwards == got
    monkeypatch.setattr(alloc_data, "_BOUND_MARGIN", 10.0)  # no bound is that far above
    plain = fn("x", conv, found)
    assert plain != got
    assert max(abs(a - _reference(conv, c, cov)) for a, c in zip(plain, found)) < 1e-10


def test_float32_layers_score_the_float32_kernel_compress_builds():
    conv, cov = _layer(6)
    conv = conv.float()
    found = [c for c in weight_candidates(conv, ("svd", "tucker2")) if c.format != "dense"]
    metric = Metric(conv.weight.detach(), cov)
    for c in found[:: max(1, len(found) // 12)]:
        want = _reference(conv, c, cov)
        assert alloc_data._scored(conv, metric, c) == pytest.approx(want, rel=0, abs=1e-12)


def test_metric_messages_name_their_caller_and_small_scales_are_no_special_case():
    conv, cov = _layer(7)
    w = conv.weight.detach()
    with pytest.raises(ValueError, match=r"^output_error: covariance has shape \(3, 3\)"):
        output_error(w, w, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match=r"^Metric: covariance has shape \(3, 3\)"):
        Metric(w, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match=r"^Metric: kernel must have at least 2 dimensions"):
        Metric(torch.ones(3, dtype=F64), cov)
    approx = w * 0.9
    tiny = InputCovariance(cov.matrix * 1e-12, cov.rows)  # an output energy far below 1
    assert Metric(w, tiny).error(approx) == pytest.approx(Metric(w, cov).error(approx), rel=1e-9)
    small = w * 1e-3  # a kernel of norm below 1 still reports its weight error
    fmt = whitened_format(small, "tucker2", cov, ranks=(3, 2))
    direct = float((fmt.to_dense() - small).norm() / small.norm())
    assert fmt.error == pytest.approx(direct, rel=1e-9) and fmt.error > 0
