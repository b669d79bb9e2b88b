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
