"""Dense spectra: every cut against numpy's SVD; entropies and errors against their formulas."""

import csv
import importlib
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tensornet as tn


def numpy_svdvals(array, left_axes):
    right = [i for i in range(array.ndim) if i not in left_axes]
    rows = int(np.prod([array.shape[i] for i in left_axes]))
    m = np.transpose(array, list(left_axes) + right).reshape(rows, -1)
    return np.linalg.svd(m, compute_uv=False)


@given(
    shape=st.lists(st.integers(1, 4), min_size=3, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_cut_matches_numpy_svd(shape, seed):
    a = np.random.default_rng(seed).standard_normal(shape)
    legs = [f"l{i}" for i in range(len(shape))]
    all_cuts = tn.cuts(legs)
    assert len(all_cuts) == 2 ** (len(shape) - 1) - 1
    for left, _ in all_cuts:
        sp = tn.spectrum(torch.from_numpy(a), left, legs=legs)
        ref = numpy_svdvals(a, [legs.index(x) for x in left])
        np.testing.assert_allclose(sp.values.numpy(), ref, rtol=1e-6, atol=1e-12 * ref.max())
        p = ref**2 / (ref**2).sum()
        nz = p[p > 0]
        assert sp.entropy() == pytest.approx(-(nz * np.log(nz)).sum(), abs=1e-9)
        assert sp.entropy(alpha=2) == pytest.approx(-np.log((p**2).sum()), abs=1e-9)
        assert sp.entropy(base=2) == pytest.approx(sp.entropy() / math.log(2), abs=1e-9)
        for chi in range(len(ref) + 1):
            assert sp.relative_error(chi) == pytest.approx(math.sqrt(p[chi:].sum()), abs=1e-9)
        assert sp.effective_rank() == pytest.approx(math.exp(sp.entropy()))
        assert sp.rank_for(tn.Truncation(rel_tol=0.3)) == tn.Truncation(rel_tol=0.3).rank(
            torch.from_numpy(ref)
        )


def test_spectrum_edge_cases():
    sp = tn.Spectrum(torch.zeros(3), ("a",), ("b",))
    assert sp.entropy() == 0.0 and sp.relative_error(0) == 0.0 and sp.norm == 0.0
    flat = tn.Spectrum(torch.ones(4), ("a",), ("b",))
    assert flat.entropy(alpha=0) == pytest.approx(math.log(4))
    assert flat.entropy(alpha=float("inf")) == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="chi must be"):
        flat.relative_error(-1)
    with pytest.raises(ValueError, match="alpha"):
        flat.entropy(alpha=-1)
    assert flat.as_dict()["cut"] == "a|b"


def test_kernel_spectra_seven_cuts_match_float64_svd_and_gram_is_accurate():
    torch.manual_seed(0)
    weights = {
        "a": torch.randn(64, 32, 3, 3),
        "b": torch.randn(64, 32, 3, 3),
        "c": torch.randn(10, 20),
    }
    spectra = tn.kernel_spectra(weights)
    assert len(spectra) == 7 + 7 + 1
    for sp in spectra:
        w = weights[sp.name].double().numpy()
        legs = tn.KERNEL_LEGS[w.ndim]
        ref = numpy_svdvals(w, [legs.index(x) for x in sp.left_legs])
        big = ref > 1e-3 * ref[0]
        np.testing.assert_allclose(sp.values.numpy()[big], ref[big], rtol=1e-4)


def test_weight_and_model_spectra_table(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    table = tn.model_spectra(model)
    assert table.layers == ["0", "2", "4"] and len(table) == 7 + 7 + 1
    layers, cut_labels, e = table.entropy_matrix()
    assert e.shape == (3, 8) and np.isnan(e[2, 0]) and not np.isnan(e[2, -1])
    assert table.get("2", "kh|out,in,kw").chi_max == 1
    assert len(tn.model_spectra(model, layers="[02]")) == 14
    with pytest.raises(ValueError, match="no weight matching 'nothing'"):
        tn.weight_spectra(model.state_dict(), layers="nothing")
    path = tmp_path / "spectra.csv"
    table.to_csv(path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(table)
    assert float(rows[0]["entropy"]) == pytest.approx(table.spectra[0].entropy(), rel=1e-9)


def test_truncate_one_cut_is_eckart_young_and_keeps_shape():
    torch.manual_seed(1)
    w = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    out = tn.truncate(w, ["out", "kh"], tn.Truncation(max_rank=4))
    assert out.tensor.shape == w.shape
    ref = numpy_svdvals(w.numpy(), [0, 2])
    expected = math.sqrt((ref[4:] ** 2).sum() / (ref**2).sum())
    assert out.error == pytest.approx(expected, rel=1e-9)
    assert out.step_errors[0] == pytest.approx(expected, rel=1e-9)
    after = numpy_svdvals(out.tensor.numpy(), [0, 2])
    assert np.all(after[4:] < 1e-10 * after[0])  # rank along the cut is now 4


def test_truncate_several_cuts_reports_total_error():
    torch.manual_seed(2)
    w = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    out = tn.truncate(w, [["out"], ["in"], ["out", "in"]], 3)
    assert len(out.spectrum) == 3 and len(out.step_errors) == 3
    actual = float(torch.linalg.norm(out.tensor - w) / torch.linalg.norm(w))
    assert out.error == pytest.approx(actual, rel=1e-12)
    # each step's squared error adds up to at most the total (errors are orthogonal projections)
    assert out.error <= math.sqrt(sum(e**2 for e in out.step_errors)) + 1e-12
    for left in (["out"], ["in"], ["out", "in"]):
        s = numpy_svdvals(out.tensor.numpy(), [tn.KERNEL_LEGS[4].index(x) for x in left])
        assert np.all(s[3:] < 1e-9 * s[0])


def test_bad_cut_is_named():
    with pytest.raises(ValueError, match="has no leg 'q'"):
        tn.spectrum(torch.ones(2, 3, 4), ["q"])
    with pytest.raises(ValueError, match="proper subset"):
        tn.spectrum(torch.ones(2, 3), ["out", "in"])
    with pytest.raises(ValueError, match="trunc must be given"):
        tn.truncate(torch.ones(2, 3), ["out"], None)


def test_layer_patterns_match_whole_names():
    w = {
        f"{n}.weight": torch.randn(4, 4)
        for n in ("features.0", "fc", "fc1", "classifier", "1", "10")
    }
    assert tn.weight_spectra(w, layers="fc*").layers == ["fc", "fc1"]
    assert tn.weight_spectra(w, layers="1").layers == ["1"]
    assert tn.weight_spectra(w, layers=r"features\.\d").layers == ["features.0"]
    assert tn.weight_spectra(w, layers="*1*").layers == ["fc1", "1", "10"]


def test_transposed_convs_are_left_out_and_bad_arguments_named():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ConvTranspose2d(8, 3, 3))
    assert tn.model_spectra(model).layers == ["0"]
    with pytest.raises(ValueError, match="method must be"):
        tn.spectrum(torch.ones(2, 3), ["out"], method="SVD")
    with pytest.raises(ValueError, match="at least one cut"):
        tn.truncate(torch.ones(2, 3), [], 2)


def test_half_precision_kernels_truncate():
    w = torch.randn(8, 4, 3, 3).half()
    out = tn.truncate(w, ["out"], 2)
    assert out.tensor.dtype == torch.float16
    ref = numpy_svdvals(w.double().numpy(), [0])
    expected = math.sqrt((ref[2:] ** 2).sum() / (ref**2).sum())
    assert out.error == pytest.approx(expected, rel=2e-2)


def test_the_module_is_spectra_and_tn_spectrum_is_the_function():
    import importlib
    import importlib.util

    module = importlib.import_module("tensornet.spectra")
    assert module.spectrum is tn.spectrum and callable(tn.spectrum)
    assert importlib.util.find_spec("tensornet.spectrum") is None  # no module shadowed any more


def test_colliding_layer_names_are_refused():
    w = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="'conv.weight' and 'conv' would both be layer 'conv'"):
        tn.weight_spectra({"conv.weight": w, "conv": 2 * w})
    # distinct layers are all kept (nothing silently dropped)
    table = tn.weight_spectra({"conv.weight": w, "conv2": 2 * w})
    assert table.layers == ["conv", "conv2"]
    assert table.get("conv2", "out|in").norm == pytest.approx(2 * float(w.norm()))


def test_truncation_result_repr_is_a_summary():
    w = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    res = tn.truncate(w, [["out"], ["kh"]], 4)
    text = repr(res)
    assert "\n" not in text and "tensor(" not in text and len(text) < 200
    assert "shape=(16, 8, 3, 3)" in text and "out|in,kh,kw -> 4 of 16" in text
    assert "kh|out,in,kw -> 3 of 3" in text and f"error={res.error:.3g}" in text
    assert res.ranks == (4, 3)


def test_numpy_and_torch_integers_are_ints():
    w = torch.randn(8, 4, 3, dtype=torch.float64)
    a = tn.truncate(w, [np.int64(0)], np.int64(3))
    b = tn.truncate(w, ["out"], 3)
    torch.testing.assert_close(a.tensor, b.tensor)
    assert tn.spectrum(w, [torch.tensor(1)]).left_legs == ("in",)
    assert tn.spectrum(w, ["out"]).rank_for(np.int32(2)) == 2
    assert tn.spectrum(w, ["out"]).relative_error(np.int64(8)) == 0.0


def test_gram_route_of_a_float32_kernel_is_accurate_to_float64_rounding():
    # Singular values over three decades; the float64 Gram route gets each one above 1e-3 of
    # the largest to ~1e-10 relative (a float32 Gram matrix would give ~1e-4).
    g = torch.Generator().manual_seed(3)
    u = torch.linalg.qr(torch.randn(48, 48, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(200, 48, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -3, 48, dtype=torch.float64)
    w = ((u * s) @ v.T).float()
    ref = np.linalg.svd(w.double().numpy(), compute_uv=False)
    for method in ("auto", "gram"):
        got = tn.spectrum(w, ("out",), legs=("out", "in"), method=method).values.numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_kernel_spectra_batch_matricisations_of_equal_shape(monkeypatch):
    spectra_module = importlib.import_module("tensornet.spectra")
    batches = []
    real = spectra_module._singular_values
    monkeypatch.setattr(
        spectra_module,
        "_singular_values",
        lambda batch, method: batches.append(tuple(batch.shape)) or real(batch, method),
    )
    weights = {"a": torch.randn(4, 4, 2, 2), "b": torch.randn(4, 4, 2, 2)}
    out = tn.kernel_spectra(weights)
    # 7 cuts per kernel; equal shapes across cuts and kernels share one batched call
    shapes = Counter()
    for sp in out:
        w = weights[sp.name]
        rows = math.prod(w.shape[tn.KERNEL_LEGS[4].index(x)] for x in sp.left_legs)
        shapes[(rows, w.numel() // rows)] += 1
    assert sorted(batches) == sorted((n, *shape) for shape, n in shapes.items())
    assert len(batches) < len(out)
