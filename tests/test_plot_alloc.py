"""tensornet.plot_alloc: per-layer frontiers of an auto allocation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tensornet.nn import allocate
from tensornet.plot_alloc import allocation_frontiers


@pytest.fixture(scope="module")
def alloc():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3)
    )
    return allocate(net, 0.6, "auto", skip=(), formats=("svd", "tucker2"))


def test_one_panel_per_layer_with_every_frontier_point_and_the_choice_ringed(alloc, tmp_path):
    fig = allocation_frontiers(alloc, columns=3, path=tmp_path / "f.png", title="auto")
    assert (tmp_path / "f.png").stat().st_size > 0
    axes = fig.axes
    assert len(axes) == 4  # 4 layers on 2 rows of 3: the two empty panels removed
    for ax, (name, frontier) in zip(axes, alloc.frontiers.items()):
        choice = alloc.layers[name]
        assert ax.get_title() == f"{name}: {choice.label}"
        (line,) = ax.lines
        assert list(line.get_xdata()) == [c.cost for c in frontier]
        assert list(line.get_ydata()) == [c.error for c in frontier]
        points = [tuple(col.get_offsets()[0]) for col in ax.collections]
        assert len(points) == len(frontier) + 1  # every candidate and the ring
        assert points[-1] == pytest.approx((choice.params, choice.error))
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {c.label for f in alloc.frontiers.values() for c in f}
    assert fig._suptitle.get_text() == "auto"


def test_a_selection_of_layers_and_bad_arguments(alloc):
    fig = allocation_frontiers(alloc, ["2", "0"])
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["2", "0"]
    with pytest.raises(ValueError, match="not among"):
        allocation_frontiers(alloc, ["nope"])
    with pytest.raises(ValueError, match="not among"):
        allocation_frontiers(alloc, [])
    with pytest.raises(ValueError, match="columns"):
        allocation_frontiers(alloc, columns=0)
    alds = allocate(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3)), 0.6)
    with pytest.raises(ValueError, match="no frontiers"):
        allocation_frontiers(alds)


def test_panel_sizes_colours_markers_and_axes(alloc):
    fig = allocation_frontiers(alloc, ["0", "1", "3"], columns=2)
    assert tuple(fig.get_size_inches()) == pytest.approx((3.2 * 2, 2.8 * 2))
    families = sorted({c.label for n in ("0", "1", "3") for c in alloc.frontiers[n]})
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    from matplotlib.colors import to_rgba

    for ax, name in zip(fig.axes, ["0", "1", "3"]):
        frontier = alloc.frontiers[name]
        assert ax.get_xscale() == "log" and ax.get_ylabel() == "error"
        assert ax.get_xlabel() == "parameters"
        (line,) = ax.lines
        assert line.get_color() == "0.8" and line.get_linewidth() == 0.8
        *dots, ring = ax.collections
        for dot, c in zip(dots, frontier):
            assert tuple(dot.get_offsets()[0]) == pytest.approx((c.cost, c.error))
            assert tuple(dot.get_facecolor()[0]) == to_rgba(colours[c.label])
            assert list(dot.get_sizes()) == [16] and dot.get_zorder() == 2
        assert list(ring.get_sizes()) == [120] and ring.get_zorder() == 3
        assert len(ring.get_facecolor()) == 0 and tuple(ring.get_edgecolor()[0]) == to_rgba("k")
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == families
    assert legend.get_texts()[0].get_fontsize() == pytest.approx(
        __import__("matplotlib").font_manager.FontProperties(size="small").get_size_in_points()
    )
    for handle, family in zip(legend.legend_handles, families):
        assert handle.get_color() == colours[family] and handle.get_marker() == "o"
        assert handle.get_linestyle() == "None"
    assert fig._suptitle is None


def test_other_measures_name_their_unit_and_a_choice_off_the_frontier_is_not_ringed(alloc):
    from dataclasses import replace

    timed = replace(alloc, measure="time")
    assert allocation_frontiers(timed, ["1"]).axes[0].get_xlabel() == "estimated seconds"
    assert allocation_frontiers(replace(alloc, measure="flops"), ["1"]).axes[0].get_xlabel() == (
        "FLOPs"
    )
    assert allocation_frontiers(replace(alloc, measure="odd"), ["1"]).axes[0].get_xlabel() == "odd"
    choice = alloc.layers["1"]
    moved = replace(alloc, layers={**alloc.layers, "1": replace(choice, params=choice.params + 1)})
    ax = allocation_frontiers(moved, ["1"]).axes[0]
    assert len(ax.collections) == len(alloc.frontiers["1"])  # no ring
    for bad in (True, 1.5, "2"):
        with pytest.raises(ValueError, match="columns must be an int >= 1"):
            allocation_frontiers(alloc, columns=bad)
    fig = allocation_frontiers(alloc, [1], columns=5)  # names as str; one column for one layer
    assert fig.axes[0].get_title().startswith("1:")
    assert tuple(fig.get_size_inches()) == pytest.approx((3.2, 2.8))
    with pytest.raises(ValueError, match=r"layers \['9'\] are not among"):
        allocation_frontiers(alloc, ["1", "9"])
    with pytest.raises(ValueError, match=r"layers \[\] are not among|layers .* not among"):
        allocation_frontiers(alloc, [])


def test_defaults_layout_legend_place_and_what_is_refused(alloc):
    fig = allocation_frontiers(alloc, ["0", "1", "2", "3", "0"])  # five panels, four a row
    assert tuple(fig.get_size_inches()) == pytest.approx((3.2 * 4, 2.8 * 2))
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    legend = fig.legends[0]
    assert legend._outside_loc == "right" and legend._loc == 1  # outside, right upper
    one = allocation_frontiers(alloc, ["0", "1"], columns=1)  # one column: accepted
    assert tuple(one.get_size_inches()) == pytest.approx((3.2, 2.8 * 2))
    for bad in (object(), None):
        with pytest.raises(
            ValueError, match=r"^allocation_frontiers: the allocation holds no frontiers \(use"
        ):
            allocation_frontiers(bad)
