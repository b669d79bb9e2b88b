"""tensornet.nn.select: what compression supports, over tensornet.weights' selection."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch import nn

from tensornet import nn as tnn
from tensornet import weights
from tensornet.nn import select
from tensornet.nn.select import select_layers, select_with_notes, supported, unsupported_reason

UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"


@pytest.mark.parametrize(
    "module, reason",
    [
        (nn.Linear(2, 2), None),
        (nn.Linear(2, 2, bias=False), None),
        (nn.Conv2d(4, 4, 3), None),
        (nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=2), None),
        (nn.ReLU(), "ReLU is not a conv or linear layer"),
        (nn.Bilinear(2, 2, 2), "Bilinear is not a conv or linear layer"),
        (nn.ConvTranspose2d(4, 4, 3), None),
        (
            nn.ConvTranspose1d(4, 4, 3),
            "ConvTranspose1d is not supported (no compressed layer; supported: Linear, Conv1d, "
            "Conv2d, Conv3d, ConvTranspose2d)",
        ),
        (nn.Conv1d(4, 4, 3), None),
        (nn.Conv3d(4, 4, 3), None),
        (nn.Conv3d(4, 4, 3, groups=2), "groups=2 is not supported (only groups=1)"),
        (nn.Conv2d(4, 4, 3, groups=2), None),  # grouped and depthwise convs are supported
        (nn.Conv2d(4, 4, 3, groups=4), None),
    ],
)
def test_unsupported_reason(module, reason):
    assert unsupported_reason(module) == reason
    assert supported(module) is (reason is None)


def test_a_lazy_or_subclassed_layer():
    class MyConv(nn.Conv2d):
        pass

    assert unsupported_reason(MyConv(2, 2, 1)) is None
    assert unsupported_reason(nn.LazyLinear(3)) is None


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(4, 8, 1, groups=2),
        nn.Conv2d(8, 8, 1),
        nn.ConvTranspose1d(8, 8, 1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def test_select_layers_leaves_unsupported_layers_out_unless_asked():
    net = _net()
    assert select_layers(net) == ["1", "4"]
    assert select_layers(net, include_unsupported=True) == ["0", "1", "2", "4"]
    assert select_layers(net, skip=("4",)) == ["1"]
    assert select_layers(net, "[0-2]", include_unsupported=True) == ["0", "1", "2"]
    assert select_layers(net, "[0-2]", strict=False) == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"^layer '0' cannot be compressed: groups=2 is not"):
        select_layers(net, "[0-2]")
    with pytest.raises(
        ValueError, match=r"^layer '2' cannot be compressed: ConvTranspose1d is not"
    ):
        select_layers(net, ["2"])
    assert select_layers(net, ["1"]) == ["1"]
    with pytest.raises(select.NoMatchingLayer, match="no conv/linear layer matches"):
        select_layers(nn.Sequential(nn.ConvTranspose3d(2, 2, 1)))
    assert select_layers(nn.Sequential(nn.ConvTranspose3d(2, 2, 1)), strict=False) == []


def test_select_layers_first_and_last_and_warnings():
    net = _net()
    assert select_layers(net, skip=("first", "last")) == ["1"]
    runs = nn.Sequential(nn.Conv1d(4, 8, 1, groups=2), nn.Unflatten(2, (3, 1)), nn.Conv2d(8, 8, 1),
                         nn.Flatten(), nn.Linear(24, 2))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_layers(runs, skip=("last",), example_input=torch.randn(1, 4, 3)) == ["2"]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.b(self.a(x) if x.sum() > 0 else x)

    with pytest.warns(UserWarning, match="could not trace") as caught:
        assert select_layers(Branchy(), skip=("last",)) == ["a"]
    assert caught[0].filename == __file__ or UNDER_MUTMUT  # mutmut adds a trampoline frame
    chosen, notes = select_with_notes(Branchy(), None, "first", True, False, None)
    assert chosen == ["b"] and len(notes) == 1 and "could not trace" in notes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = torch.ones(1, 2)
        assert select_layers(Branchy(), skip=("last",), example_input=x) == ["a"]
    assert select_with_notes(_net(), None, (), True, True, None) == (["0", "1", "2", "4"], [])
    assert select_with_notes(_net(), "0", (), False, False, None) == (["0"], [])


def test_the_selection_names_are_those_of_the_ground_floor():
    for name in ("EndLayers", "NoMatchingLayer", "end_layers", "matches"):
        assert getattr(select, name) is getattr(weights, name)
        assert getattr(tnn, name, None) in (None, getattr(weights, name))
    # compression's layer_aliases also names transposed convs (it compresses ConvTranspose2d)
    net = nn.Sequential(
        nn.Conv2d(2, 2, 1), nn.ConvTranspose2d(2, 2, 1), nn.ConvTranspose3d(2, 2, 1)
    )
    assert weights.layer_aliases(net) == {"0": ("0",)}
    assert select.layer_aliases(net) == weights.layer_aliases(net, transposed=True)
    assert list(select.layer_aliases(net)) == ["0", "1", "2"]
    assert tnn.select_layers is select_layers and tnn.layer_inputs is weights.layer_inputs
