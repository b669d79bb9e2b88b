"""Spectra tables of dense weights: what is chosen, what is refused and how, and the CSV values."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import tensornet as tn


def test_kernel_spectra_names_legs_and_array_inputs():
    w = torch.randn(4, 3, dtype=torch.float64)
    assert [sp.label for sp in tn.kernel_spectra(w, legs=("a", "b"))] == ["a|b"]
    assert tn.kernel_spectra(w)[0].name is None
    out = tn.kernel_spectra({"arr": w.numpy()})  # array-likes need no detach
    assert out[0].name == "arr"
    assert torch.allclose(out[0].values, torch.linalg.svdvals(w))
    with pytest.raises(TypeError, match=r"^kernel_spectra takes a tensor, .* tensors, got str$"):
        tn.kernel_spectra("w")
    with pytest.raises(ValueError, match=r"^weight 'b' has shape \(3,\); a cut needs >= 2 legs$"):
        tn.kernel_spectra({"b": torch.ones(3)})


def test_non_finite_inputs_are_named():
    bad = torch.full((4, 3), float("nan"))
    with pytest.raises(ValueError, match=r"^weight holds NaN"):
        tn.kernel_spectra(bad)
    with pytest.raises(ValueError, match=r"^weight 'fc' holds NaN"):
        tn.kernel_spectra({"fc": bad})
    with pytest.raises(ValueError, match=r"^'conv1' holds NaN"):
        tn.spectrum(bad, ["out"], name="conv1")
    with pytest.raises(ValueError, match=r"^x holds NaN"):
        tn.spectrum(bad, ["out"])


def test_weight_spectra_chooses_2_to_5_dimensional_weights_and_full_keys():
    weights = {
        "b.bias": torch.ones(3),  # skipped, and the loop goes on
        "c3.weight": torch.randn(2, 2, 2, 2, 2),
        "c6.weight": torch.randn(1, 1, 1, 1, 1, 2),
        "fc.weight": torch.randn(3, 2),
    }
    assert tn.weight_spectra(weights).layers == ["c3", "fc"]
    assert tn.weight_spectra(weights, layers="fc.weight").layers == ["fc"]
    with pytest.raises(TypeError, match="a state_dict\\), got list$"):
        tn.weight_spectra([torch.ones(2, 2)])
    with pytest.raises(ValueError, match="rename one of them$"):
        tn.weight_spectra({"conv.weight": torch.ones(2, 2), "conv": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="method must be"):
        tn.weight_spectra(weights, method="bogus")
    with pytest.raises(ValueError, match="method must be"):
        tn.model_spectra(torch.nn.Linear(2, 2), method="bogus")


def test_nothing_chosen_names_what_there_is():
    ten = {f"n{i}": torch.ones(2) for i in range(10)}
    listed = ", ".join(ten)
    what = f"^no weight with 2-5 dimensions; names are: {listed}$"
    with pytest.raises(tn.NoMatchingLayer, match=what):
        tn.weight_spectra(ten)
    eleven = {**ten, "n10": torch.ones(2)}
    with pytest.raises(tn.NoMatchingLayer, match=r"names are: n0, .*, n9, \.\.\. \(11 in all\)$"):
        tn.weight_spectra(eleven)
    with pytest.raises(tn.NoMatchingLayer, match=r"^no weight matching 'q'; names are: w$"):
        tn.weight_spectra({"w": torch.ones(2, 2)}, layers="q")


def test_csv_holds_the_singular_values(tmp_path):
    table = tn.weight_spectra({"fc": torch.randn(5, 4, dtype=torch.float64)})
    path = tmp_path / "s.csv"
    table.to_csv(path)
    (row,) = list(csv.DictReader(path.open()))
    values = np.array([float(v) for v in row["singular_values"].split(" ")])
    np.testing.assert_allclose(values, table.spectra[0].values.numpy(), rtol=1e-8)


def test_nodes_are_transposed_to_the_legs_given_and_named_when_bad():
    w = torch.randn(4, 3, 2, dtype=torch.float64)
    node = tn.Node(w, ("a", "b", "c"))
    sp = tn.spectrum(node, ["a"], legs=("c", "a", "b"))
    assert sp.right_legs == ("c", "b")
    assert tn.spectrum(node, ["a"]).right_legs == ("b", "c")
    bad = torch.full((2, 2), float("nan"))
    with pytest.raises(ValueError, match=r"^node 'A' holds NaN"):
        tn.spectrum(tn.Node(bad, ("a", "b"), name="A"), ["a"])
    with pytest.raises(ValueError, match=r"^x holds NaN"):
        tn.spectrum(tn.Node(bad, ("a", "b")), ["a"])


def test_cuts_by_axis_position_and_their_refusals():
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    assert tn.spectrum(w, 0).left_legs == ("out",)
    assert tn.spectrum(w, [-4]).left_legs == ("out",)
    with pytest.raises(ValueError, match=r"axis 4 is out of range"):
        tn.spectrum(w, [4])
    with pytest.raises(TypeError, match=r"hold leg names or axis positions, got float 1.5$"):
        tn.spectrum(w, [1.5])
    with pytest.raises(TypeError, match=r"got float 3.5$"):
        tn.spectrum(w, 3.5)
    with pytest.raises(ValueError, match=r"without repeats$"):
        tn.spectrum(w, ["out", "out"])


def test_float32_and_complex_inputs_go_through_the_float64_gram():
    torch.manual_seed(5)
    w = torch.randn(6, 4, dtype=torch.complex64)
    ref = torch.linalg.svdvals(w.to(torch.complex128))
    assert torch.allclose(tn.spectrum(w, ["out"]).values, ref, rtol=1e-5)
    real = torch.randn(6, 4)
    ref = torch.linalg.svdvals(real.double())
    assert torch.allclose(tn.spectrum(real, ["out"], method="svd").values, ref, rtol=1e-5)


def test_truncate_cut_forms_errors_and_repr():
    torch.manual_seed(6)
    w = torch.randn(5, 4, dtype=torch.float64)
    one = tn.truncate(w, ["out"], 2)
    assert isinstance(one.spectrum, tn.Spectrum)
    assert isinstance(tn.truncate(w, [0], 2).spectrum, tn.Spectrum)
    assert isinstance(tn.truncate(w, 0, 2).spectrum, tn.Spectrum)
    assert tn.truncate(w, ["a"], 2, legs=("a", "b")).spectrum.left_legs == ("a",)
    assert len(tn.truncate(w, [["out"], 1], 2).spectrum) == 2
    with pytest.raises(ValueError, match="at least one cut"):
        tn.truncate(w, [["out"], []], 2)
    given = r"^trunc must be given \(a Truncation or an int max_rank\)$"
    with pytest.raises(ValueError, match=given):
        tn.truncate(w, ["out"], None)
    with pytest.raises(TypeError, match=r"a sequence of cuts, got float$"):
        tn.truncate(w, 1.5, 2)
    with pytest.raises(ValueError, match="trunc"):
        tn.truncate(w, ["out"], -1)
    assert tn.truncate(torch.zeros(3, 3), ["out"], 1).error == 0.0
    assert tn.truncate(w * 1e-3, ["out"], 1).error > 0.1
    assert repr(one) == (
        f"TruncationResult(shape=(5, 4), float64, cuts=[out|in -> 2 of 4], "
        f"error={one.error:.3g}, step_errors=[{one.step_errors[0]:.3g}])"
    )
    two = tn.truncate(w, [["out"], ["in"]], 1)._replace(ranks=())
    assert "cuts=[out|in -> ? of 4, in|out -> ? of 4]" in repr(two)
    assert f"step_errors=[{two.step_errors[0]:.3g}, {two.step_errors[1]:.3g}]" in repr(two)


def test_table_lookups():
    table = tn.weight_spectra({"fc": torch.randn(5, 4, dtype=torch.float64)})
    assert table.entropy_matrix()[2][0, 0] == pytest.approx(table.spectra[0].entropy())
    with pytest.raises(KeyError, match="no spectrum for layer 'fc' and cut 'x'"):
        table.get("fc", "x")
