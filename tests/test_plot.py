import numpy as np
import pytest
import torch

import tensornet as tn
from tensornet import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture
def table():
    g = torch.Generator().manual_seed(0)
    weights = {
        "conv1": torch.randn(8, 3, 3, 3, generator=g, dtype=torch.float64),
        "conv2": torch.randn(16, 8, 3, 3, generator=g, dtype=torch.float64),
        "fc": torch.randn(10, 16, generator=g, dtype=torch.float64),
    }
    return tn.weight_spectra(weights)


def curves(fig):
    """The data lines of the first Axes (the dashed chi marker left out)."""
    return [line for line in fig.axes[0].lines if not line.get_label().startswith("χ")]


def test_bond_spectra_plots_normalised_nonzero_values(tmp_path, table):
    rank_two = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    spectra = [*table.spectra[:3], tn.spectrum(rank_two, ["out"], name="low")]
    fig = plot.bond_spectra(spectra, chi=3, path=tmp_path / "sub" / "bond.png", title="t")
    assert_png(tmp_path / "sub" / "bond.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_title() == "t"
    lines = curves(fig)
    assert len(lines) == 4
    for line, sp in zip(lines, spectra):
        s = sp.normalized().numpy()
        np.testing.assert_array_equal(line.get_ydata(), s[s > 0])
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, sp.chi_max + 1)[s > 0])
    assert lines[-1].get_ydata().tolist() == [1.0, 0.5]  # the zero is masked
    (marker,) = [line for line in ax.lines if line.get_label() == "χ = 3"]
    assert list(marker.get_xdata()) == [3, 3]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "χ = 3"


def test_bond_spectra_raw_values_labels_and_table_input(table):
    fig = plot.bond_spectra(table, normalize=False, legend=False)
    assert len(curves(fig)) == len(table) and fig.axes[0].get_legend() is None
    np.testing.assert_array_equal(curves(fig)[0].get_ydata(), table.spectra[0].values.numpy())
    one_cut = [table.get(layer, "out|in,kh,kw") for layer in ("conv1", "conv2")]
    legend = plot.bond_spectra(one_cut).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["conv1", "conv2"]
    legend = plot.bond_spectra(one_cut, labels=["a", "b"]).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="2 labels for 1 spectra"):
        plot.bond_spectra(one_cut[:1], labels=["a", "b"])
    with pytest.raises(ValueError, match="chi must be an int"):
        plot.bond_spectra(one_cut, chi=2.5)


def test_zero_spectrum_does_not_break_the_log_axis(tmp_path):
    sp = tn.Spectrum(torch.zeros(3), ("a",), ("b",))
    fig = plot.bond_spectra(sp, path=tmp_path / "zero.png")
    assert_png(tmp_path / "zero.png")
    assert len(curves(fig)[0].get_ydata()) == 0


def test_draws_into_a_given_axes_and_saves_pdf(tmp_path, table):
    from matplotlib.figure import Figure

    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot.truncation_curves(table, ax=right, path=tmp_path / "f.pdf") is fig
    assert len(right.lines) == len(table) and not left.lines
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    inner = Figure().subfigures(1, 2)[1].add_subplot()
    assert plot.bond_spectra(table, ax=inner, path=tmp_path / "sub.png") is inner.figure.figure
    assert_png(tmp_path / "sub.png")


def test_entropy_heatmap_image_is_the_entropy_matrix(tmp_path, table):
    fig = plot.entropy_heatmap(table, alpha=2.0, path=tmp_path / "heat.png")
    assert_png(tmp_path / "heat.png")
    ax = fig.axes[0]
    layers, cut_labels, e = table.entropy_matrix(2.0)
    image = ax.images[0].get_array()
    np.testing.assert_array_equal(image.mask, np.isnan(e))  # fc has one cut only: blank cells
    np.testing.assert_allclose(image.filled(np.nan), e, rtol=0, atol=0)
    assert [t.get_text() for t in ax.get_yticklabels()] == layers
    assert [t.get_text() for t in ax.get_xticklabels()] == cut_labels
    annotations = [t.get_text() for t in ax.texts]
    assert annotations == [f"{v:.2f}" for v in e.ravel() if not np.isnan(v)]
    assert len(fig.axes) == 2  # the colorbar
    assert "Rényi-2" in fig.axes[1].get_ylabel()
    assert not plot.entropy_heatmap(table, annotate=False).axes[0].texts


def test_truncation_curves_are_relative_errors(tmp_path, table):
    fig = plot.truncation_curves(table, log=False, path=tmp_path / "trunc.png")
    assert_png(tmp_path / "trunc.png")
    for line, sp in zip(curves(fig), table):
        np.testing.assert_array_equal(line.get_ydata(), sp.relative_errors().numpy())
        np.testing.assert_array_equal(line.get_xdata(), np.arange(sp.chi_max + 1))
    log = plot.truncation_curves(table, chi=2)
    assert log.axes[0].get_yscale() == "log"
    for line, sp in zip(curves(log), table):
        e = sp.relative_errors().numpy()
        np.testing.assert_array_equal(line.get_ydata(), e[e > 0])
    frac = curves(plot.truncation_curves(table, log=False, fraction=True))
    assert all(line.get_xdata()[-1] == 1.0 for line in frac)
    with pytest.raises(ValueError, match="fraction"):
        plot.truncation_curves(table, fraction=True, chi=2)


def mps(n=4):
    nodes = []
    for i in range(n):
        legs = ([f"b{i}"] if i else []) + [f"p{i}"] + ([f"b{i + 1}"] if i < n - 1 else [])
        dims = [3 if leg.startswith("b") else 2 for leg in legs]
        nodes.append(tn.Node(torch.ones(dims), legs, name=f"A{i}"))
    return tn.TensorNetwork(nodes)


def texts_by_kind(fig):
    out = {}
    for t in fig.axes[0].texts:
        kind, _, _ = t.get_gid().partition(":")
        out.setdefault(kind, []).append(t.get_text())
    return out


def test_draw_network_chain_labels_every_node_bond_and_open_leg(tmp_path):
    net = mps(4)
    fig = plot.draw_network(net, path=tmp_path / "net.png")
    assert_png(tmp_path / "net.png")
    texts = texts_by_kind(fig)
    assert sorted(texts["node"]) == sorted(net.names)
    assert sorted(texts["bond"]) == sorted(str(b.dim) for b in net.bonds)
    assert sorted(texts["leg"]) == sorted(net.open_legs)
    assert len(fig.axes[0].patches) == len(net)
    assert plot.network_layout(net) == {f"A{i}": (float(i), 0.0) for i in range(4)}
    # physical legs of the inner nodes hang straight down
    leg_text = {t.get_text(): t.get_position() for t in fig.axes[0].texts}
    assert leg_text["p1"][0] == pytest.approx(1.0) and leg_text["p1"][1] < -0.5


def test_draw_network_tree_parallel_bonds_and_layouts():
    nodes = [
        tn.Node(torch.ones(2, 3, 4), ("a", "b", "c"), name="root"),
        tn.Node(torch.ones(2, 5, 6), ("a", "x", "y"), name="L"),
        tn.Node(torch.ones(3, 4, 7), ("b", "c", "z"), name="R"),  # two bonds to root
        tn.Node(torch.ones(5, 8), ("x", "o1"), name="LL"),
        tn.Node(torch.ones(6, 9), ("y", "o2"), name="LR"),
    ]
    net = tn.TensorNetwork(nodes)
    first = plot.network_layout(net)
    assert first == plot.network_layout(net)  # deterministic
    assert len({tuple(np.round(p, 3)) for p in first.values()}) == len(net)
    fig = plot.draw_network(net, bond_labels="both")
    assert sorted(texts_by_kind(fig)["bond"]) == ["a=2", "b=3", "c=4", "x=5", "y=6"]
    bond_positions = {t.get_text(): t.get_position() for t in fig.axes[0].texts}
    assert bond_positions["b=3"] != pytest.approx(bond_positions["c=4"])  # parallel bonds bow
    circle = plot.network_layout(net, "circular")
    assert np.allclose([np.hypot(*p) for p in circle.values()], np.hypot(*circle["root"]))
    with pytest.raises(ValueError, match="not a chain"):
        plot.network_layout(net, "chain")
    with pytest.raises(ValueError, match="no position for nodes"):
        plot.draw_network(net, {"root": (0, 0)})


def test_draw_network_single_node_and_empty():
    single = tn.TensorNetwork([tn.Node(torch.ones(2, 3, 4), ("i", "j", "k"), name="T")])
    assert sorted(texts_by_kind(plot.draw_network(single))["leg"]) == ["i", "j", "k"]
    assert not plot.draw_network(tn.TensorNetwork()).axes[0].texts


def test_figures_do_not_leak_into_pyplot(table):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot.bond_spectra(table)
    plot.draw_network(mps(2))
    assert plt.get_fignums() == before


def sweep_rows():
    rows = []
    for layer in ("conv1", "conv2"):
        for cut in ("out|in,kh,kw", "in|out,kh,kw"):
            for chi in (4, 1, 2):  # unsorted on purpose
                rows.append({"layer": layer, "cut": cut, "chi": chi, "accuracy": chi / 10,
                             "norm_kept": 1 - 1 / (chi + 1)})
    return rows


def test_sweep_curves_one_panel_per_layer_one_curve_per_cut(tmp_path):
    fig = plot.sweep_curves(sweep_rows(), baseline=0.5, path=tmp_path / "sweep.png", title="s")
    assert_png(tmp_path / "sweep.png")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["conv1", "conv2"]
    for ax in axes:
        lines = [line for line in ax.lines if line.get_label() != "baseline"]
        assert [line.get_label() for line in lines] == ["out|in,kh,kw", "in|out,kh,kw"]
        for line in lines:
            assert line.get_xdata().tolist() == [1, 2, 4]
            assert line.get_ydata().tolist() == [0.1, 0.2, 0.4]
        assert ax.get_xscale() == "log"
        (base,) = [line for line in ax.lines if line.get_label() == "baseline"]
        assert list(base.get_ydata()) == [0.5, 0.5]
    assert len(fig.legends) == 1  # shared by the panels
    assert fig.get_suptitle() == "s"


def test_sweep_curves_into_one_axes_and_missing_columns():
    fig = plot.sweep_curves(sweep_rows(), x="norm_kept", group=None)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and len(ax.lines) == 2  # one curve per cut
    assert len(ax.lines[0].get_xdata()) == 6  # both layers' points, as no group splits them
    with pytest.raises(KeyError, match="no column 'loss'"):
        plot.sweep_curves(sweep_rows(), y="loss")


def test_recovery_curve(tmp_path):
    fig = plot.recovery_curve([0.8, 0.9], before=0.95, truncated=0.4, path=tmp_path / "r.png")
    assert_png(tmp_path / "r.png")
    line, before = fig.axes[0].lines
    assert line.get_xdata().tolist() == [0, 1, 2] and line.get_ydata().tolist() == [0.4, 0.8, 0.9]
    assert list(before.get_ydata()) == [0.95, 0.95]
    only = plot.recovery_curve([0.7]).axes[0].lines
    assert len(only) == 1 and only[0].get_xdata().tolist() == [1]
