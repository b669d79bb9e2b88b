"""tensornet.weights: the leg table, layer selection, end layers, module replacement, inputs."""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
from torch import nn

from tensornet import weights
from tensornet.weights import (
    KERNEL_LEGS,
    EndLayers,
    NoMatchingLayer,
    end_layers,
    eval_mode,
    kernel_legs,
    layer_aliases,
    layer_inputs,
    matches,
    register_layer_type,
    replace_module,
    select_layers,
    select_with_notes,
    shown_names,
)


class Heads(nn.Module):
    """A stem, a trunk and two heads."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.trunk = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten())
        self.cls = nn.Linear(4 * 16, 3)
        self.reg = nn.Linear(4 * 16, 1)

    def forward(self, x):
        h = self.trunk(self.stem(x))
        return {"cls": self.cls(h), "reg": self.reg(h).sigmoid()}


class Branchy(Heads):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        h = self.trunk(self.stem(x))
        if h.sum() > 0:
            h = h * 2
        return self.cls(h), self.reg(h)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, a, b):
        return self.head(self.mid(torch.cat([self.a(a), self.b(b)], -1)).relu())


X = torch.randn(2, 3, 4, 4)
UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"


# -- the leg table -------------------------------------------------------------------------------
def test_kernel_legs_by_number_of_dimensions():
    assert KERNEL_LEGS == {
        2: ("out", "in"),
        3: ("out", "in", "k"),
        4: ("out", "in", "kh", "kw"),
        5: ("out", "in", "kd", "kh", "kw"),
    }
    assert weights.MATRIX_LEGS == ("out", "in") and weights.CONV2D_LEGS == ("out", "in", "kh", "kw")
    assert [kernel_legs(n) for n in (2, 3, 4, 5)] == [KERNEL_LEGS[n] for n in (2, 3, 4, 5)]
    assert kernel_legs(1) == ("d0",) and kernel_legs(6) == tuple(f"d{i}" for i in range(6))
    assert kernel_legs(0) == ()


def test_the_table_is_the_one_everywhere():
    import tensornet as tn
    from tensornet import analysis, spectra
    from tensornet.nn import layers, truncate

    assert tn.KERNEL_LEGS is spectra.KERNEL_LEGS is analysis.KERNEL_LEGS is KERNEL_LEGS
    assert truncate.KERNEL_LEGS is KERNEL_LEGS
    assert layers.KERNEL_LEGS == KERNEL_LEGS[4] and layers.MATRIX_LEGS == KERNEL_LEGS[2]


# -- patterns ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, pattern, hit",
    [
        ("fc1", "fc*", True),
        ("fc", "fc*", True),
        ("classifier", "fc*", False),
        ("1", "1", True),
        ("11", "1", False),
        ("x1", "1", False),
        ("conv1", "conv[12]", True),
        ("conv3", "conv[12]", False),
        ("layer1.0.conv1", r"layer\d\.0\.conv1", True),
        ("layer1.0.conv1x", r"layer\d\.0\.conv1", False),
        ("a.conv", "*conv", True),  # not a regex: a glob only
        ("a.con", "*conv", False),
        ("anything", None, True),
        ("conv12", "conv1", False),  # whole names only, as a regex too
        ("a.b", "a?b", True),
        ("ab", "a.b", False),
    ],
)
def test_matches_whole_names_as_glob_or_regex(name, pattern, hit):
    assert matches(name, pattern) is hit


def test_matches_refuses_a_pattern_that_is_not_a_string():
    with pytest.raises(TypeError, match=r"^a layer pattern is a str \(glob or regex\), got int$"):
        matches("fc", 1)


# -- the layers of a model -----------------------------------------------------------------------
def test_layer_aliases_first_names_every_name_and_no_transposed_or_weightless_layers():
    lin, bare = nn.Linear(4, 4), nn.Linear(4, 4)
    bare.weight = None
    net = nn.Sequential(
        nn.Conv1d(4, 4, 1), lin, nn.ReLU(), lin, nn.ConvTranspose2d(4, 4, 3), bare, lin
    )
    assert layer_aliases(net) == {"0": ("0",), "1": ("1", "3", "6")}
    assert list(layer_aliases(nn.Sequential(nn.Linear(2, 2), nn.Conv2d(2, 2, 1)))) == ["0", "1"]
    assert layer_aliases(nn.ReLU()) == {}
    assert layer_aliases(nn.Linear(2, 2)) == {"": ("",)}


def test_register_layer_type_makes_a_module_a_layer_for_end_layers():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))
            self.inner = nn.Linear(4, 4)  # hidden inside the registered layer

        def forward(self, x):
            return self.inner(x) * self.scale

    net = nn.Sequential(nn.Linear(3, 4), Gate(), nn.ReLU())
    assert end_layers(net).last == ("1.inner",)
    try:
        assert register_layer_type(Gate) is Gate
        assert register_layer_type(Gate) is Gate
        assert weights._LAYER_TYPES.count(Gate) == 1
        for ends in (end_layers(net), end_layers(net, torch.randn(2, 3))):
            assert ends.first == ("0",) and ends.last == ("1",)
    finally:
        weights._LAYER_TYPES.remove(Gate)
    for bad in (Gate(), int, "Gate"):
        with pytest.raises(TypeError, match="cls must be a torch.nn.Module subclass, got"):
            register_layer_type(bad)


def test_compressed_layers_are_registered_by_the_nn_package():
    from tensornet.nn import TNLayer

    assert TNLayer in weights._LAYER_TYPES


# -- replacing a module --------------------------------------------------------------------------
def test_replace_module_at_a_dotted_name_returns_the_old_one():
    inner = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(inner, nn.ReLU()))
    new = nn.Tanh()
    assert replace_module(net, "1.0", new) is inner
    assert net[1][0] is new and net[1]._modules["0"] is new and isinstance(net[1][1], nn.ReLU)
    top = nn.Identity()
    old = net[0]
    assert replace_module(net, "0", top) is old and net[0] is top
    assert replace_module(net, "1.0", inner) is new and net[1][0] is inner


def test_replace_module_refuses_unknown_names_and_non_modules():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    for name in ("2", "1.1", "x.0", "", "0.weight"):
        with pytest.raises(NoMatchingLayer, match=f"^name {re.escape(repr(name))}: the model has"):
            replace_module(net, name, nn.ReLU())
    with pytest.raises(TypeError, match="^module must be a torch.nn.Module, got int$"):
        replace_module(net, "0", 3)
    assert isinstance(net[0], nn.Linear)


# -- forwards ------------------------------------------------------------------------------------
def test_eval_mode_restores_each_module_even_after_an_error():
    net = nn.Sequential(nn.Dropout(), nn.Dropout(), nn.Linear(2, 2)).train()
    net[1].eval()
    with eval_mode(net) as inside:
        assert inside is net
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, False, True]
    with pytest.raises(KeyError), eval_mode(net):
        raise KeyError("boom")
    assert [m.training for m in net.modules()] == [True, True, False, True]


def test_layer_inputs_first_call_tuples_unreached_layers_and_no_grad():
    seen = []

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.unused, self.drop = nn.Linear(4, 4), nn.Linear(4, 4), nn.Dropout()

        def forward(self, x, y):
            seen.append((torch.is_grad_enabled(), self.drop.training))
            return self.lin(self.lin(x)[:, :4]) + y

    net = Twice().train()
    shapes = layer_inputs(net, (torch.randn(3, 4), torch.randn(3, 4)), ["unused", "lin"])
    assert shapes == {"lin": (3, 4)} and list(shapes) == ["lin"]
    assert seen == [(False, False)] and net.training and net.drop.training
    assert not net.lin._forward_pre_hooks and not net.unused._forward_pre_hooks
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    assert layer_inputs(seq, torch.randn(5, 3, 4, 4), ["2", "0"]) == {
        "2": (5, 16),
        "0": (5, 3, 4, 4),
    }


def test_layer_inputs_removes_its_hooks_when_the_forward_fails():
    net = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError):
        layer_inputs(net, torch.randn(2, 5), ["0"])
    assert not net[0]._forward_pre_hooks and net.training


# -- input and output layers ---------------------------------------------------------------------
def test_end_layers_by_fx_and_by_hooks():
    net = Heads()
    fx, hooks = end_layers(net), end_layers(net, X)
    assert fx == EndLayers(("stem",), ("cls", "reg"), "fx")
    assert hooks == EndLayers(("stem",), ("cls", "reg"), "hooks")
    two = TwoInputs()
    a, b = torch.randn(2, 3), torch.randn(2, 2)
    assert end_layers(two) == EndLayers(("a", "b"), ("head",), "fx")
    assert end_layers(two, (a, b)) == EndLayers(("a", "b"), ("head",), "hooks")


def test_end_layers_in_module_order_and_through_skips():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.b, self.a = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x).relu()
            return self.b(h) + h * 2  # a reaches the output directly too

    for ends in (end_layers(Skip()), end_layers(Skip(), torch.randn(3, 4))):
        assert ends.first == ("a",) and ends.last == ("b", "a")


def test_end_layers_of_an_untraceable_model():
    net = Branchy()
    assert end_layers(net, X) == EndLayers(("stem",), ("cls", "reg"), "hooks")
    order = end_layers(net)
    assert (order.first, order.last, order.method) == (("stem",), ("reg",), "order")
    assert order.note == (
        "torch.fx could not trace the model (TraceError): 'first'/'last' are the first/last "
        "registered conv/linear layers (give example_input to find them by a forward)"
    )
    bad = end_layers(net, torch.randn(2, 5, 4, 4))
    assert bad.method == "order" and bad.note.startswith(
        "the forward with hooks failed (RuntimeError: "
    )
    assert bad.note.endswith(
        "; torch.fx could not trace the model (TraceError): 'first'/'last' are the first/last "
        "registered conv/linear layers"
    )


def test_end_layers_fall_back_to_fx_when_outputs_have_no_autograd():
    net = Heads()
    with torch.inference_mode():
        ends = end_layers(net, X)
    assert ends == EndLayers(
        ("stem",),
        ("cls", "reg"),
        "fx",
        "the forward with hooks failed (RuntimeError: no layer output reaches a model output "
        "through autograd); found by torch.fx",
    )
    assert end_layers(nn.Sequential(nn.ReLU()), torch.randn(2)) == EndLayers((), (), "hooks")
    assert end_layers(nn.Sequential(nn.ReLU())) == EndLayers((), (), "fx")


class Diamonds(nn.Module):
    """A chain of 60 diamonds (each value used twice): walks must not revisit nodes."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        h = self.a(x)
        for _ in range(60):
            h = h.relu() + h.sigmoid()
        return self.b(x) * self.scale + h  # the buffer needs no gradient: a None in the graph


def test_end_layers_through_shared_values_and_constants():
    net = Diamonds()
    for ends, method in ((end_layers(net), "fx"), (end_layers(net, torch.randn(2, 4)), "hooks")):
        assert ends == EndLayers(("a", "b"), ("a", "b"), method)


def test_a_model_whose_output_comes_from_its_input_alone_is_traced():
    class Bypass(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            self.lin(x)
            return x * 2

    ends = end_layers(Bypass(), torch.randn(2, 4))
    assert (ends.first, ends.last, ends.method) == (("lin",), (), "fx")
    assert ends.note.startswith("the forward with hooks failed (RuntimeError: no layer output")


def test_end_layers_take_integer_inputs_and_leave_the_model_as_it_was():
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = nn.Embedding(5, 4), nn.Linear(4, 2)

        def forward(self, ids):
            return self.out(self.emb(ids))

    net = Embed().train()
    assert end_layers(net, torch.tensor([1, 2])) == EndLayers((), ("out",), "hooks")
    assert net.training and not net.out._forward_hooks and not net.out._forward_pre_hooks
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert end_layers(net, torch.randn(2, 4)) == EndLayers(("0",), ("0",), "hooks")


# -- choosing layers -----------------------------------------------------------------------------
def test_select_layers_by_pattern_names_predicate_and_skip():
    net = Heads()
    assert select_layers(net) == ["stem", "trunk.1", "cls", "reg"]
    assert select_layers(net, "trunk.*") == ["trunk.1"]
    assert select_layers(net, ["reg", "stem"]) == ["stem", "reg"]
    assert select_layers(net, lambda name, m: isinstance(m, nn.Linear)) == ["cls", "reg"]
    assert select_layers(net, skip=("first", "last")) == ["trunk.1"]
    assert select_layers(net, skip="first") == ["trunk.1", "cls", "reg"]
    assert select_layers(net, skip=("c*", "last")) == ["stem", "trunk.1"]
    assert select_layers(net, None, ("last",), example_input=X) == ["stem", "trunk.1"]
    assert select_layers(net, "cls", skip=("cls",), strict=False) == []


def test_select_layers_matches_every_name_of_a_shared_module():
    block = nn.Linear(4, 4)
    net = nn.Sequential()
    net.add_module("block", block)
    net.add_module("again", block)
    net.add_module("head", nn.Linear(4, 2))
    assert select_layers(net, "again") == ["block"] == select_layers(net, ["again"])
    assert select_layers(net, lambda n, m: n == "again") == ["block"]
    assert select_layers(net, skip=("again",)) == ["head"]


def test_select_layers_errors_name_the_layers():
    net = Heads()
    with pytest.raises(NoMatchingLayer, match=re.escape(
        "layers ['nope'] are not conv/linear layers; found ['stem', 'trunk.1', 'cls', 'reg']"
    )):
        select_layers(net, ["cls", "nope"])
    with pytest.raises(NoMatchingLayer, match=re.escape(
        "skip entry 'head*' matches no conv/linear layer; layers are: stem, trunk.1, cls, reg"
    )):
        select_layers(net, skip=("last", "head*"))
    with pytest.raises(NoMatchingLayer, match=re.escape(
        "no conv/linear layer matches 'x*' (skip=('last',)); layers are: stem, trunk.1, cls, reg"
    )):
        select_layers(net, "x*", skip="last")
    assert select_layers(net, "x*", strict=False) == []


def test_select_layers_refuse():
    def refuse(m):
        return "no linears" if isinstance(m, nn.Linear) else None

    net = Heads()
    assert select_layers(net, refuse=refuse) == ["stem", "trunk.1"]
    assert select_layers(net, refuse=refuse, strict=False) == ["stem", "trunk.1"]
    assert select_layers(net, "stem", refuse=refuse) == ["stem"]
    with pytest.raises(ValueError, match=r"^layer 'cls' cannot be compressed: no linears$"):
        select_layers(net, "c*", refuse=refuse)
    assert select_layers(net, "c*", refuse=refuse, strict=False) == ["cls"]
    assert select_layers(net, "c*") == ["cls"]
    with pytest.raises(NoMatchingLayer, match="no conv/linear layer matches None"):
        select_layers(net, refuse=lambda m: "never")
    assert select_layers(net, "cls", refuse=lambda m: "") == ["cls"]  # an empty reason is none


def test_select_layers_warns_how_end_layers_were_found():
    net = Branchy()
    with pytest.warns(UserWarning, match="could not trace") as caught:
        assert select_layers(net, skip=("last", "first")) == ["trunk.1", "cls"]
    assert len(caught) == 1
    assert caught[0].filename == __file__ or UNDER_MUTMUT  # mutmut adds a trampoline frame
    chosen, notes = select_with_notes(net, None, ("last",), True, None, None)
    assert chosen == ["stem", "trunk.1", "cls"] and len(notes) == 1
    assert notes[0].startswith("torch.fx could not trace")
    everything = ["stem", "trunk.1", "cls", "reg"]
    assert select_with_notes(net, None, ("cls",), True, None, None) == (
        ["stem", "trunk.1", "reg"],
        [],
    )  # end layers are looked for only when skip names them
    assert select_with_notes(net, None, (), True, None, None) == (everything, [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_layers(net, skip=("last",), example_input=X) == ["stem", "trunk.1"]
        assert select_with_notes(Heads(), None, "last", True, None, None) == (
            ["stem", "trunk.1"],
            [],
        )


def test_shown_names():
    assert shown_names([]) == ""
    assert shown_names(["a", "b"]) == "a, b"
    twelve = [f"l{i}" for i in range(12)]
    assert shown_names(twelve) == ", ".join(twelve)
    assert shown_names([*twelve, "x"]) == ", ".join(twelve) + ", ... (13 in all)"
