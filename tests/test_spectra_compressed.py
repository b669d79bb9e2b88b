"""Spectra of compressed layers: through the format's network, equal to the rebuilt kernel's SVD."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

import tensornet as tn
import tensornet.nn as tnn
from models.resnet import BasicBlock, ResNet
from tensornet.core.network import TensorNetwork
from tensornet.core.spectrum import cuts
from tensornet.formats import Format, cut_bond, format_cut, format_names, get_format
from tensornet.spectra import CompressedSpectrum
from tensornet.weights import layer_kernel, register_layer_type

TOL = 1e-10  # relative to s1, float64
# cuts some bond induces, per format, for the 12 -> 8 conv (3x3) and the 12 -> 8 linear below
INDUCED_CONV = {
    "tucker": {("out",), ("in",), ("kh",), ("kw",)},
    "tucker2": {("out",), ("in",)},
    "svd": {("out",)},
    "grouped": {("out",)},
    "cp": {("out",), ("kw",), ("out", "in")},
    "ht": {("out",), ("in",), ("kh",), ("kw",), ("out", "in")},
    "tt": {("out",), ("in",), ("out", "kw")},
    "tr": set(),
    "ttmatrix": {("out", "in")},
    "cut": {("out", "kh")},
}


def _layer(fmt: str, kind: str, dtype=torch.float64) -> tnn.TNLayer:
    torch.manual_seed(7)
    if kind == "conv":
        return tnn.TNConv2d.from_conv(nn.Conv2d(12, 8, 3).to(dtype), fmt, fraction=0.5)
    return tnn.TNLinear.from_linear(nn.Linear(12, 8).to(dtype), fmt, fraction=0.5)


def _reference(dense: torch.Tensor, legs, left) -> torch.Tensor:
    right = [leg for leg in legs if leg not in left]
    rows = math.prod(dense.shape[legs.index(leg)] for leg in left)
    m = dense.permute([legs.index(leg) for leg in (*left, *right)]).reshape(rows, -1)
    return torch.linalg.svdvals(m)


def _close(values: torch.Tensor, ref: torch.Tensor) -> None:
    assert values.shape == ref.shape
    assert float((values - ref).abs().max()) <= TOL * float(ref[0])


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("fmt", format_names())
def test_every_cut_equals_the_rebuilt_kernels_svd(fmt, kind):
    layer = _layer(fmt, kind)
    kernel = layer.to_format()
    dense = layer.weight.detach()
    legs = kernel.legs
    spectra = tn.kernel_spectra(kernel)
    assert [sp.label for sp in spectra] == [sp.label for sp in tn.kernel_spectra(dense)]
    induced = set()
    for (left, _), sp in zip(cuts(legs), spectra):
        assert isinstance(sp, CompressedSpectrum) and sp.format == fmt and sp.name is None
        _close(sp.values, _reference(dense, legs, left))
        bond = cut_bond(kernel, left)
        assert (sp.rank is None) == (bond is None)
        if bond is not None:
            induced.add(left)
            assert sp.rank == kernel.network.dim(bond)
            assert torch.all(sp.values[sp.rank :] == 0)  # the bond's rank bounds the spectrum
    if kind == "conv":
        assert induced == INDUCED_CONV[fmt]
    else:
        assert induced == ({("out",)} if fmt not in ("tr", "ttmatrix") else set())


@pytest.mark.parametrize("fmt", sorted(f for f, c in INDUCED_CONV.items() if c))
def test_bond_cuts_build_no_dense_kernel(fmt, monkeypatch):
    layer = _layer(fmt, "conv")
    kernel = layer.to_format()
    dense = layer.weight.detach()
    below = kernel.dense_size - 1  # the size guard below the kernel's size

    def refuse(*args, **kwargs):
        raise AssertionError("contracted the network")

    for left, _ in cuts(kernel.legs):
        if cut_bond(kernel, left) is None:
            with pytest.raises(ValueError, match="max_elements"):
                format_cut(kernel, left, max_elements=below)
            continue
        with monkeypatch.context() as m:
            m.setattr(TensorNetwork, "contract", refuse)
            m.setattr(Format, "to_dense", refuse)
            sp = tn.spectrum(kernel, left, max_elements=below, name="conv")
        assert sp.name == "conv" and sp.left_legs == left
        _close(sp.values, _reference(dense, kernel.legs, left))


def test_float32_factors_give_float64_exact_values():
    layer = _layer("tt", "conv", torch.float32)
    kernel = layer.to_format()
    exact = kernel.to(dtype=torch.float64).to_dense()
    for left in (("out",), ("out", "kh")):  # one bond's cut, one contracted
        _close(tn.spectrum(kernel, list(left)).values, _reference(exact, kernel.legs, left))


def test_complex_factors_give_complex128_exact_values():
    torch.manual_seed(3)
    legs = ("a", "b", "c")
    tt = get_format("tt").from_dense(torch.randn(4, 3, 5, dtype=torch.complex64), ranks=(2, 2))
    exact = tt.to(dtype=torch.complex128).to_dense()
    for left in (("a",), ("a", "c")):  # one bond's cut, one contracted
        left = tuple(tt.legs[legs.index(x)] for x in left)
        _close(format_cut(tt, left).spectrum.values, _reference(exact, tt.legs, left))


def test_format_cut_reports_bond_and_refuses_bad_cuts():
    kernel = _layer("tucker2", "conv").to_format()
    res = format_cut(kernel, "in")
    assert res.bond is not None and res.rank == kernel.ranks[1]
    assert res.spectrum.left_legs == ("in",) and res.spectrum.right_legs == ("out", "kh", "kw")
    assert format_cut(kernel, ["out", "kh"]).rank is None
    with pytest.raises(ValueError, match="'q' is not a leg"):
        format_cut(kernel, ["q"])
    mine = r"proper subset of the legs \('out', 'in', 'kh', 'kw'\) without repeats$"
    with pytest.raises(ValueError, match=mine):
        format_cut(kernel, list(kernel.legs))
    with pytest.raises(ValueError, match=mine):
        format_cut(kernel, [])
    with pytest.raises(ValueError, match=mine):
        format_cut(kernel, ["out", "out"])
    with pytest.raises(TypeError, match="must be a Format .*, got Tensor"):
        format_cut(torch.ones(2, 2), ["out"])
    with pytest.raises(TypeError, match="left_legs must be leg names of .*, got int"):
        format_cut(kernel, 3)
    with pytest.raises(ValueError, match="do not apply"):
        tn.spectrum(kernel, ["out"], legs=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="do not apply"):
        tn.kernel_spectra({"c": kernel}, legs=("a", "b", "c", "d"))
    assert len(tn.kernel_spectra(kernel, legs=kernel.legs)) == 7


def test_mixed_mappings_keep_order_and_names():
    conv = _layer("tucker2", "conv")
    dense = torch.randn(8, 12, dtype=torch.float64)
    out = tn.kernel_spectra({"a": dense, "b": conv.to_format(), "c": dense * 2})
    assert [sp.name for sp in out] == ["a"] + ["b"] * 7 + ["c"]
    assert [type(sp) is CompressedSpectrum for sp in out] == [False] + [True] * 7 + [False]
    _close(out[8].values, 2 * out[0].values)
    seq = tn.kernel_spectra([conv.to_format(), dense])
    assert [sp.name for sp in seq] == ["0"] * 7 + ["1"]


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet(BasicBlock, (3, 3, 3), (8, 8, 8), 3, 10, shortcut="pad").double()


def test_model_spectra_lists_every_layer_of_a_compressed_resnet(tmp_path):
    dense = _small_resnet()
    names = [n for n, m in dense.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    small, _ = tnn.compress(dense, "tucker2", fraction=0.5, measure_time=False)
    compressed = [n for n, m in small.named_modules() if isinstance(m, tnn.TNLayer)]
    assert compressed and len(compressed) < len(names)  # the first and last stay dense
    table = tn.model_spectra(small)
    assert table.layers == names
    assert table.compressed == dict.fromkeys(compressed, "tucker2")
    assert len(table) == 7 * (len(names) - 1) + 1
    for name in names:
        module = small.get_submodule(name)
        ref = tn.kernel_spectra(module.weight.detach())
        for sp, want in zip([sp for sp in table if sp.name == name], ref):
            assert sp.label == want.label
            assert isinstance(sp, CompressedSpectrum) == (name in compressed)
            _close(sp.values, want.values)
    rows = table.rows(values=False)
    assert {r["layer"] for r in rows if r["compressed"]} == set(compressed)
    assert all(r["format"] == "" and r["rank"] is None for r in rows if not r["compressed"])
    ranked = table.get(compressed[0], "out|in,kh,kw")
    assert ranked.rank == small.get_submodule(compressed[0]).ranks[0]
    path = tmp_path / "spectra.csv"
    table.to_csv(path)
    read = list(csv.DictReader(path.open()))
    row = next(r for r in read if r["layer"] == compressed[0] and r["cut"] == "out|in,kh,kw")
    assert (row["compressed"], row["format"], row["rank"]) == ("True", "tucker2", str(ranked.rank))
    assert read[0]["compressed"] == "False" and read[0]["rank"] == ""
    assert tn.model_spectra(small, layers=compressed[0]).layers == [compressed[0]]


def test_model_spectra_passes_the_size_guard():
    model = nn.Sequential(tnn.TNConv2d.from_conv(nn.Conv2d(12, 8, 3).double(), "tr", fraction=0.5))
    assert len(tn.model_spectra(model)) == 7
    with pytest.raises(ValueError, match="max_elements=10"):
        tn.model_spectra(model, max_elements=10)  # a ring needs its dense kernel


def test_layer_kernel_and_registration():
    layer = _layer("svd", "linear")
    kernel = layer_kernel(layer)
    assert isinstance(kernel, get_format("svd"))
    assert torch.equal(kernel.to_dense(), layer.weight.detach())
    assert layer_kernel(nn.Linear(2, 2)) is None
    with pytest.raises(TypeError, match="kernel must be callable"):
        register_layer_type(tnn.TNLayer, kernel=3)


def test_weight_spectra_takes_formats_and_skips_other_values():
    kernel = _layer("tt", "conv").to_format()
    table = tn.weight_spectra({"conv.weight": kernel, "conv.bias": torch.ones(8), "n": 3})
    assert table.layers == ["conv"] and table.compressed == {"conv": "tt"}


def test_plots_mark_compressed_layers_and_draw_their_ranks():
    from tensornet import plot

    kernel = _layer("tucker2", "conv").to_format()
    sp = tn.spectrum(kernel, ["out"], name="conv")
    dense = tn.spectrum(torch.randn(8, 12, dtype=torch.float64), ["out"], name="fc")
    ax = plot.bond_spectra([sp, dense]).axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) > 2]
    marks = [line for line in ax.lines if len(line.get_xdata()) == 2]
    labels = [f"conv (out|in,kh,kw) [tucker2, rank {sp.rank}]", "fc (out|in)"]
    assert [line.get_label() for line in curves] == labels
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [sp.rank, sp.rank]
    assert marks[0].get_color() == curves[0].get_color()
    style = (marks[0].get_linestyle(), marks[0].get_linewidth(), marks[0].get_zorder())
    assert style == (":", 1.0, 1)
    full_rank = tnn.TNConv2d.from_conv(nn.Conv2d(12, 8, 3).double(), "tucker2", ranks=(8, 12))
    whole = tn.spectrum(full_rank.to_format(), ["out"])
    assert whole.rank == whole.chi_max == 8  # the bond cut nothing: no line
    assert len(plot.bond_spectra([whole]).axes[0].lines) == 1
    full = tn.spectrum(kernel, ["out", "kh"], name="conv")  # no bond: no rank line
    ax = plot.bond_spectra([sp, full]).axes[0]
    assert [line.get_label() for line in ax.lines if len(line.get_xdata()) > 2] == [
        f"out|in,kh,kw [tucker2, rank {sp.rank}]",
        "out,kh|in,kw [tucker2]",
    ]
    assert len(ax.lines) == 3
    ax = plot.bond_spectra([sp], labels=["mine"]).axes[0]
    assert [line.get_label() for line in ax.lines][0] == "mine"
    table = tn.weight_spectra({"conv": kernel, "fc": torch.randn(8, 12)})
    ticks = plot.entropy_heatmap(table).axes[0].get_yticklabels()
    assert [t.get_text() for t in ticks] == ["conv [tucker2]", "fc"]


def test_any_registered_kernel_accessor_reaches_model_spectra():
    class Holder(nn.Module):
        def __init__(self, fmt: Format) -> None:
            super().__init__()
            self.fmt = fmt

    class Plain(nn.Module):
        pass

    kernel = _layer("svd", "linear").to_format()
    assert register_layer_type(Holder, kernel=lambda m: m.fmt) is Holder
    assert layer_kernel(Holder(kernel)) is kernel
    assert tn.model_spectra(nn.Sequential(nn.Linear(3, 2), Holder(kernel))).compressed == {
        "1": "svd"
    }
    assert register_layer_type(Plain) is Plain
    assert layer_kernel(Plain()) is None
