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
