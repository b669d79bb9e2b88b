"""Cuts that differ only by size-1 legs share one decomposition, in spectra and in the sweep.

Shared spectra are compared value by value with spectra computed cut by cut (and with numpy),
and the decompositions are counted by spying on the SVD each module calls.
"""

import importlib
import math
import pickle

import numpy as np
import pytest
import torch

import tensornet as tn
from tensornet import analysis
from tensornet.analysis import Cell, _SweepCell, truncation_sweep
from tensornet.spectra import cut_key, cut_spectra

spectra_module = importlib.import_module("tensornet.spectra")

# shape -> distinct matricisations among its cuts
SHAPES = {
    (16, 8, 1, 1): 2,  # 4 cuts are the out x in matrix, 3 the 1 x (out*in) row
    (8, 16, 1, 3): 4,
    (8, 16, 3, 1): 4,
    (4, 2, 1, 3): 4,
    (6, 5, 3, 3): 7,
    (12, 5): 1,
    (6, 1): 1,
    (5, 3, 1): 2,  # conv1d, 1-wide
    (8, 4, 1, 1, 1): 2,  # conv3d, 1x1x1
    (1, 1, 1, 1): 1,
}


def numpy_values(w, left):
    legs = tn.KERNEL_LEGS[w.ndim]
    node = tn.Node(w.double(), legs)
    return np.linalg.svd(node.matricize(left).numpy(), compute_uv=False)


def first_of_each_key(w):
    node = tn.Node(w, tn.KERNEL_LEGS[w.ndim])
    first = {}
    for left, _ in tn.cuts(node.legs):
        first.setdefault(cut_key(node, left), left)
    return node, first


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_shared_spectra_equal_the_spectra_of_each_cut(shape, dtype):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)), dtype=dtype)
    node, first = first_of_each_key(w)
    shared = tn.kernel_spectra(w)
    assert [(sp.left_legs, sp.right_legs) for sp in shared] == tn.cuts(node.legs)
    by_label = {sp.label: sp for sp in shared}
    for sp in shared:
        assert sp.name is None
        own = tn.spectrum(w, sp.left_legs)
        assert (sp.label, sp.chi_max) == (own.label, own.chi_max)
        # the values of the cut that was decomposed, bit for bit (float64 is decomposed matrix
        # by matrix; the float32 Gram route rounds differently in a batch), and those of the
        # cut's own matrix up to the rounding of a transposed decomposition
        left = first[cut_key(node, sp.left_legs)]
        assert torch.equal(sp.values, by_label[tn.spectrum(w, left).label].values)
        if dtype == torch.float64:
            assert torch.equal(sp.values, tn.spectrum(w, left).values)
        torch.testing.assert_close(sp.values, own.values, rtol=1e-12, atol=1e-12 * own.norm)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(
            sp.values.numpy(), numpy_values(w, sp.left_legs), rtol=tol, atol=tol * own.norm
        )
    assert len({cut_key(node, sp.left_legs) for sp in shared}) == SHAPES[shape]


def test_a_1x1_kernel_has_an_out_by_in_matrix_and_a_row():
    w = torch.randn(16, 8, 1, 1, dtype=torch.float64)
    by_label = {sp.label: sp for sp in tn.kernel_spectra({"c": w})}
    matrix = np.linalg.svd(w[:, :, 0, 0].numpy(), compute_uv=False)
    for label in ("out|in,kh,kw", "in|out,kh,kw", "out,kh|in,kw", "out,kw|in,kh"):
        np.testing.assert_allclose(by_label[label].values.numpy(), matrix, rtol=1e-12)
        assert by_label[label].name == "c"
    for label in ("kh|out,in,kw", "kw|out,in,kh", "out,in|kh,kw"):
        assert by_label[label].values.tolist() == pytest.approx([float(w.norm())], rel=1e-12)


def test_cut_key_drops_size_1_legs_and_names_both_sides():
    node = tn.Node(torch.ones(4, 2, 1, 3), tn.KERNEL_LEGS[4])
    assert cut_key(node, ("out",)) == frozenset({frozenset({"out"}), frozenset({"in", "kw"})})
    assert cut_key(node, ("out", "kh")) == cut_key(node, ("in", "kw"))  # complement
    assert cut_key(node, ("kh",)) == frozenset({frozenset(), frozenset({"out", "in", "kw"})})
    assert cut_key(node, ("in",)) != cut_key(node, ("out",))


@pytest.fixture
def counted(monkeypatch):
    """The matrices each module decomposes: (rows, cols) per matrix."""
    seen = {"values": [], "svd": []}
    values, svd = spectra_module._singular_values, analysis.svd

    def counting_values(batch, method):
        seen["values"] += [tuple(batch.shape[1:])] * batch.shape[0]
        return values(batch, method)

    def counting_svd(a, *args, **kwargs):
        seen["svd"].append(tuple(a.shape))
        return svd(a, *args, **kwargs)

    monkeypatch.setattr(spectra_module, "_singular_values", counting_values)
    monkeypatch.setattr(analysis, "svd", counting_svd)
    return seen


def test_kernel_spectra_decomposes_each_distinct_matrix_once(counted):
    weights = {str(s): torch.randn(*s) for s in SHAPES}
    out = tn.kernel_spectra(weights)
    assert len(out) == sum(2 ** (len(s) - 1) - 1 for s in SHAPES)
    assert len(counted["values"]) == sum(SHAPES.values())
    counted["values"].clear()
    tn.kernel_spectra(torch.randn(64, 32, 1, 1))
    assert sorted(counted["values"]) == [(1, 2048), (64, 32)]


def test_cut_spectra_shares_and_checks_every_cut(counted):
    w = torch.randn(6, 4, 1, 1, dtype=torch.float64)
    got = cut_spectra(w, [("out",), (1,), ("out", "kw"), ("kh",)], name="c")
    assert [sp.label for sp in got] == [
        "out|in,kh,kw", "in|out,kh,kw", "out,kw|in,kh", "kh|out,in,kw"
    ]  # fmt: skip
    assert {sp.name for sp in got} == {"c"}
    assert sorted(counted["values"]) == [(1, 24), (6, 4)]
    for sp in got:
        own = tn.spectrum(w, sp.left_legs).values
        torch.testing.assert_close(sp.values, own, rtol=1e-12, atol=0)
    assert cut_spectra(w, []) == []
    counted["values"].clear()
    # every cut is checked before any work
    for bad, error, match in [
        ([("out",), ("out", "out")], ValueError, "without repeats"),
        ([("out",), ("kd",)], ValueError, "kd"),
        ("out", TypeError, "sequence of cuts"),
        (3, TypeError, "sequence of cuts"),
    ]:
        with pytest.raises(error, match=match):
            cut_spectra(w, bad)
    assert counted["values"] == []
    with pytest.raises(ValueError, match="'c'"):
        cut_spectra(torch.full((2, 2), math.nan), [("out",)], name="c")
    with pytest.raises(ValueError, match="x"):
        cut_spectra(torch.full((2, 2), math.inf), [("out",)])


def one_by_one_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 6, 1), torch.nn.Conv2d(6, 5, (1, 3)), torch.nn.Conv2d(5, 3, 2),
        torch.nn.Flatten(), torch.nn.Linear(3 * 2, 4),
    ).double()  # fmt: skip


def test_sweep_decomposes_each_distinct_matrix_of_a_layer_once(counted):
    weights = []

    def record(m):
        weights.append({n: m.get_submodule(n).weight.detach().clone() for n in ("0", "1", "2")})
        return 0.0

    model = one_by_one_model()
    original = {n: model.get_submodule(n).weight.detach().clone() for n in ("0", "1", "2")}
    rows = truncation_sweep(model, record, chis=[1, 2])
    # 1x1: 2 matrices; 1x3: 4; 2x2 (no size-1 legs): 7; linear: 1
    assert len(counted["values"]) == 2 + 4 + 7 + 1
    assert len(counted["svd"]) == 2 + 4 + 7 + 1
    for row, seen in zip(rows, weights):
        layer, left = row["layer"], tuple(row["cut"].split("|")[0].split(","))
        if layer not in original:
            continue
        ref = tn.truncate(original[layer], left, row["chi"])
        torch.testing.assert_close(seen[layer], ref.tensor, rtol=1e-12, atol=1e-12)
        assert row["rel_error"] == pytest.approx(ref.error, rel=1e-9, abs=1e-12)
    # equivalent cuts of the 1x1 layer: the same truncated weight, bit for bit
    one = {(r["cut"], r["chi"]): w["0"] for r, w in zip(rows, weights) if r["layer"] == "0"}
    for chi in (1, 2):
        for cut in ("in|out,kh,kw", "out,kh|in,kw", "out,kw|in,kh"):
            assert torch.equal(one[(cut, chi)], one[("out|in,kh,kw", chi)])


def test_sweep_task_keeps_the_factors_of_one_layer_and_none_when_pickled():
    model = one_by_one_model()
    task = _SweepCell(private=False)
    legs = tn.KERNEL_LEGS[4]
    for left in (("out",), ("kh",), ("in",), ("out", "kw")):
        task(model, lambda m: 0.0, Cell("0", left, "c", 1))
    assert len(task._factors) == 2  # the out x in matrix and the row
    for left in (("out",), ("in",), ("kh",)):
        task(model, lambda m: 0.0, Cell("2", left, "c", 1))
    assert len(task._factors) == 1  # no size-1 legs: only the last
    assert task._layer == "2"
    copy = pickle.loads(pickle.dumps(task))
    assert (copy.private, copy._layer, copy._factors) == (False, None, {})
    w = model.get_submodule("0").weight.detach()
    row = task(model, lambda m: 0.0, Cell("0", ("in",), "c", 1))
    ref = tn.truncate(tn.Node(w, legs), ("in",), 1)
    assert row["rel_error"] == pytest.approx(ref.error, rel=1e-9)


def test_sweep_refuses_a_bad_cut_as_before():
    model = one_by_one_model()
    with pytest.raises(ValueError, match="without repeats"):
        truncation_sweep(model, lambda m: 0.0, cuts=[("out",), ("out", "out")], progress=False)


def test_kernel_spectra_names_weights_of_a_sequence_and_checks_each_one():
    a, b = torch.randn(4, 3, 1, 1, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    for weights in ([a, b], (a, b)):
        out = tn.kernel_spectra(weights)
        assert [sp.name for sp in out] == ["0"] * 7 + ["1"]
        torch.testing.assert_close(out[-1].values, tn.spectrum(b, ["out"]).values)
    numpy_out = tn.kernel_spectra(a.numpy())
    assert [sp.name for sp in numpy_out] == [None] * 7
    assert torch.equal(numpy_out[0].values, tn.kernel_spectra(a)[0].values)
    named = tn.kernel_spectra(b, legs=("rows", "cols"))
    assert [sp.label for sp in named] == ["rows|cols"]
    got = cut_spectra(b, [("cols",)], legs=("rows", "cols"))
    assert got[0].label == "cols|rows"
    for bad, error, match in [
        ("ab", TypeError, r"^kernel_spectra takes a tensor, .* got str$"),
        (torch.randn(3), ValueError, r"^weight None has shape \(3,\); a cut needs >= 2 legs$"),
        (torch.full((2, 2), math.nan), ValueError, r"^weight holds NaN"),
        ({"c": torch.full((2, 2), math.nan)}, ValueError, r"^weight 'c' holds NaN"),
    ]:
        with pytest.raises(error, match=match):
            tn.kernel_spectra(bad)
    with pytest.raises(ValueError, match=r"^x holds NaN"):
        cut_spectra(torch.full((2, 2), math.nan), [("out",)])
