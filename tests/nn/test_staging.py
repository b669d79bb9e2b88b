"""Staged plans: where the factors run (placements), the steps one stage makes (with their
FLOPs and elements counted by hand) and whole staged plans against the dense conv."""

import pytest
import torch
import torch.nn.functional as F

from tensornet.formats import get_format
from tensornet.formats.structure import Factor, Structure
from tensornet.nn.geometry import ConvGeometry
from tensornet.nn.plans import ConvStep, MatmulStep, PermuteStep, WeightExpr
from tensornet.nn.staging import Placements, PlanFrame, build_staged, stage_step

F64 = torch.float64
LEGS = ("out", "in", "kh", "kw")
PAD1 = ConvGeometry.from_conv_args((3, 3), padding=1)


def tensors_for(structure, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {f.name: torch.randn(f.shape, generator=gen, dtype=F64) for f in structure.factors}


def run(plan, x, t):
    return plan(x, t)


# -- the frame ---------------------------------------------------------------------------------
def test_plan_frame_sizes_and_permute():
    frame = PlanFrame(2, ["a", "b"], {"a": 3, "b": 4, "c": 5}, (5, 6))
    assert frame.size(["a", "c"]) == 15 and frame.size([]) == 1
    assert frame.elements == 2 * 12 * 30 and frame.shape() == (2, 3, 4, 30)
    assert frame.permute_to(["a", "b"]) == [] and frame.legs == ["a", "b"]
    (step,) = frame.permute_to(("b", "a"))
    assert isinstance(step, PermuteStep) and frame.legs == ["b", "a"]
    assert (step.kind, step.flops, step.elements, step.label) == ("copy", 0, 1440, "permute")
    assert step.dims == (0, 2, 1, 3) and step.shape == (2, 3, 4, 30)


# -- one stage ---------------------------------------------------------------------------------
def test_a_channel_stage_is_a_matmul_with_the_untouched_legs_in_the_batch():
    frame = PlanFrame(2, ["a", "b"], {"a": 3, "b": 4}, (5, 4))
    factor = Factor("X", ("a", "c"), (3, 6))
    steps = stage_step(frame, [factor], {"c"}, ["c"], (), None, "cpu")
    permute, matmul = steps
    assert permute.dims == (0, 2, 1, 3)  # b (untouched) moves in front of a
    assert isinstance(matmul, MatmulStep) and matmul.label == "1x1 3->6"
    assert matmul.flops == 2 * (2 * 4) * 6 * 3 * 20 and matmul.elements == 8 * (3 + 6) * 20
    assert matmul.view == (2, 4, 1, 3, 20) and matmul.images == 8
    assert frame.legs == ["b", "c"] and frame.hw == (5, 4) and frame.dims["c"] == 6
    x = torch.randn(2, 3, 4, 20, dtype=F64)
    w = torch.randn(3, 6, dtype=F64)
    h = x
    for s in steps:
        h = s(h, {"X": w})
    torch.testing.assert_close(h.reshape(2, 4, 6, 20), torch.einsum("nabl,ac->nbcl", x, w))


def test_a_channel_stage_of_two_factors_counts_their_contraction():
    frame = PlanFrame(1, ["a"], {"a": 3}, (2, 3))
    x_, y_ = Factor("X", ("a", "r"), (3, 2)), Factor("Y", ("r", "c"), (2, 5))
    (matmul,) = stage_step(frame, [x_, y_], {"c"}, ["c"], (), None, "cpu")
    weight = WeightExpr.build([x_, y_], ("c", "a"), (1, 5, 3))
    assert weight.flops > 0 and matmul.flops == 2 * 5 * 3 * 6 + weight.flops


def test_a_conv_stage_batches_the_untouched_legs():
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    frame = PlanFrame(2, ["p", "a"], {"p": 3, "a": 2}, (5, 4))
    factor = Factor("K", ("a", "kh", "kw", "c"), (2, 3, 3, 4))
    (conv,) = stage_step(frame, [factor], {"c"}, ["c"], ("kh", "kw"), geo, "cpu")
    assert conv.kind == "conv" and conv.label == "3x3 conv 2->4" and conv.images == 6
    assert conv.flops == 2 * 6 * 4 * 2 * 9 * 20 and conv.elements == 6 * (2 * 20 + 4 * 20)
    assert conv.view == (6, 2, 5, 4) and frame.hw == (5, 4) and frame.legs == ["p", "c"]
    x = torch.randn(2, 3, 2, 20, dtype=F64)
    k = torch.randn(2, 3, 3, 4, dtype=F64)
    ref = F.conv2d(x.reshape(6, 2, 5, 4), k.permute(3, 0, 1, 2), padding=1)
    torch.testing.assert_close(conv(x, {"K": k}), ref)


@pytest.mark.parametrize(
    ("kernel", "groups", "ci", "device", "channels_last"),
    [((3, 3), 2, 1, "cpu", True), ((5, 2), 2, 1, "cpu", True), ((5, 3), 3, 1, "cpu", True),
     ((3, 3), 1, 1, "cpu", False), ((3, 3), 2, 2, "cpu", False), ((1, 9), 4, 1, "cpu", True),
     ((3, 3), 2, 1, "cuda", False)],
)  # fmt: skip
def test_cpu_depthwise_convs_run_channels_last(kernel, groups, ci, device, channels_last):
    geo = ConvGeometry.from_conv_args(kernel)
    frame = PlanFrame(1, ["g", "a"], {"g": groups, "a": ci}, (9, 9))
    factor = Factor("K", ("g", "a", "kh", "kw"), (groups, ci, *kernel))
    (conv,) = stage_step(frame, [factor], {"g"}, ["g"], ("kh", "kw"), geo, device)
    assert conv.channels_last == channels_last and not conv.shift
    assert conv.kind == ("depthwise" if channels_last else "conv" if groups == 1 else "grouped")
    if ci == 1:  # one filter per group: a depthwise conv, whatever the layout
        x = torch.randn(2, groups, 9, 9, dtype=F64)
        k = torch.randn(groups, 1, *kernel, dtype=F64)
        ref = F.conv2d(x, k, groups=groups)
        torch.testing.assert_close(conv(x.reshape(2, groups, 1, 81), {"K": k}), ref)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_matmul_feeding_a_channels_last_conv_writes_channels_last(device):
    legs = ("out", "in", "kh", "kw")
    s = get_format("cp").structure_for((6, 5, 3, 3), (4,), legs=legs)
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    stages = [("channels", ["A1"]), ("h", ["A2"]), ("w", ["A3"]), ("channels", ["A0"])]
    plan = build_staged("sep", stages, s, geo, (2, 5, 7, 6), device, 10**9)
    matmuls = [step for step in plan.steps if isinstance(step, MatmulStep)]
    assert [m.channels_last for m in matmuls] == [device == "cpu", False]
    tensors = {f.name: torch.randn(f.shape, dtype=F64) for f in s.factors}
    x = torch.randn(2, 5, 7, 6, dtype=F64)
    y = plan(x, tensors)
    a0, a1, a2, a3 = (tensors[n] for n in ("A0", "A1", "A2", "A3"))
    kernel = torch.einsum("or,ir,hr,wr->oihw", a0, a1, a2, a3)
    assert y.is_contiguous()
    torch.testing.assert_close(y, F.conv2d(x, kernel, padding=1), rtol=1e-10, atol=1e-10)


def test_a_stage_keeps_a_leg_a_later_stage_needs_as_a_group():
    frame = PlanFrame(1, ["g", "a"], {"g": 2, "a": 3}, (4, 4))
    factor = Factor("X", ("g", "a", "c"), (2, 3, 5))
    (matmul,) = stage_step(frame, [factor], {"g", "c"}, ["c"], (), None, "cpu")
    assert matmul.label == "1x1 6->10 (groups 2)" and matmul.view == (1, 1, 2, 3, 16)
    assert matmul.flops == 2 * 2 * 5 * 3 * 16 and matmul.elements == 2 * (3 + 5) * 16
    assert frame.legs == ["g", "c"]
    x = torch.randn(1, 2, 3, 16, dtype=F64)
    w = torch.randn(2, 3, 5, dtype=F64)
    ref = torch.einsum("ngal,gac->ngcl", x, w)
    torch.testing.assert_close(matmul(x, {"X": w}).reshape(ref.shape), ref)


def test_new_output_legs_come_in_the_order_of_the_output_modes():
    frame = PlanFrame(1, ["a"], {"a": 3}, (2, 2))
    factor = Factor("X", ("a", "p", "q"), (3, 2, 4))
    stage_step(frame, [factor], {"p", "q"}, ["q", "p"], (), None, "cpu")
    assert frame.legs == ["q", "p"]


def test_a_stage_that_does_not_touch_the_activation_is_none():
    frame = PlanFrame(1, ["a"], {"a": 3}, (2, 2))
    assert (
        stage_step(frame, [Factor("Y", ("z", "c"), (2, 2))], {"c"}, ["c"], (), None, "cpu") is None
    )
    assert frame.legs == ["a"] and frame.dims == {"a": 3}


@pytest.mark.parametrize(
    ("device", "kind", "layout"), [("cpu", "depthwise", True), ("cuda", "grouped", False)]
)
def test_cp_staged_plan_counts(device, kind, layout):
    s = get_format("cp").structure_for((8, 6, 3, 3), 3, legs=LEGS)
    stages = [("channels", ["A1"]), ("hw", ["A2", "A3"]), ("channels", ["A0"])]
    plan = build_staged("mine", stages, s, PAD1, (2, 6, 5, 5), device, 10**9)
    first, conv, last = plan.steps
    assert (first.label, first.flops, first.elements) == ("1x1 6->3", 2 * 2 * 3 * 6 * 25, 450)
    weight = WeightExpr.build([s.factors[2], s.factors[3]], ("r", "kh", "kw"), (3, 1, 3, 3))
    assert isinstance(conv, ConvStep) and conv.label == "3x3 conv 3->3 (groups 3)"
    assert (conv.kind, conv.channels_last, conv.groups) == (kind, layout, 3) and not conv.shift
    assert (first.channels_last, last.channels_last) == (layout, False)
    assert conv.flops == 2 * 2 * 3 * 9 * 25 + weight.flops and weight.flops > 0
    assert conv.elements == 2 * 3 * (25 + 25) and conv.view == (2, 3, 5, 5)
    assert (last.label, last.flops, last.elements) == ("1x1 3->8", 2 * 2 * 8 * 3 * 25, 550)
    assert plan.peak_elements == 400 and plan.output_shape == (2, 8, 5, 5)
    assert (
        plan.name == "mine"
        and plan.describe() == "1x1 6->3 -> 3x3 conv 3->3 (groups 3) -> 1x1 3->8"
    )
    t = tensors_for(s)
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), padding=1))


def test_a_grouped_stage_and_a_strided_conv():
    s = get_format("grouped").structure_for((8, 6, 3, 3), 2, legs=LEGS, channel_groups=2)
    g = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1)
    plan = build_staged("g", [("hw", ["V"]), ("channels", ["U"])], s, g, (3, 6, 7, 7), "cpu", 10**9)
    conv, last = plan.steps
    assert conv.label == "3x3 conv 6->4 (groups 2)" and conv.kind == "grouped"
    assert conv.flops == 2 * 3 * 2 * 2 * 3 * 9 * 16 and conv.elements == 3 * 2 * (3 * 49 + 2 * 16)
    assert last.label == "1x1 4->8" and plan.output_shape == (3, 8, 4, 4)
    assert plan.peak_elements == 3 * 6 * 49
    t = tensors_for(s, 1)
    x = torch.randn(3, 6, 7, 7, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), stride=2, padding=1))


def test_a_dense_stage_is_one_conv():
    s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3), legs=LEGS)
    plan = build_staged(
        "dense", Placements(s, ("kh", "kw")).dense(), s, PAD1, (2, 6, 5, 5), "cpu", 10**9
    )
    (conv,) = plan.steps
    assert conv.kind == "conv" and conv.label == "3x3 conv 6->8" and not conv.shift
    t = tensors_for(s, 2)
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), padding=1))


def test_build_staged_refuses_what_cannot_be_a_plan():
    s = get_format("cp").structure_for((8, 6, 3, 3), 3, legs=LEGS)
    shape = (2, 6, 5, 5)
    untouched = [("channels", ["A0"]), ("hw", ["A1", "A2", "A3"])]
    assert build_staged("x", untouched, s, PAD1, shape, "cpu", 10**9) is None
    unfinished = [("channels", ["A1"]), ("hw", ["A2", "A3"])]  # the rank leg never closes
    assert build_staged("x", unfinished, s, PAD1, shape, "cpu", 10**9) is None
    ok = [("channels", ["A1"]), ("hw", ["A2", "A3"]), ("channels", ["A0"])]
    assert build_staged("x", ok, s, PAD1, shape, "cpu", 400) is not None  # peak 400: fits
    assert build_staged("x", ok, s, PAD1, shape, "cpu", 399) is None


def test_spatial_legs_that_do_not_make_the_kernel_are_an_error():
    frame = PlanFrame(1, ["a"], {"a": 2}, (5, 5))
    factor = Factor("K", ("a", "c", "kh", "kw"), (2, 2, 2, 2))
    with pytest.raises(AssertionError, match="^spatial legs do not match the geometry$"):
        stage_step(frame, [factor], {"c"}, ["c"], ("kh", "kw"), PAD1, "cpu")


def test_a_final_permute_puts_the_output_modes_in_order():
    s = Structure(
        "custom", LEGS, (6, 2, 3, 3), (1,),
        (Factor("K", ("in", "kh", "kw", "o2", "r"), (2, 3, 3, 2, 2)),
         Factor("L", ("r", "o1"), (2, 3))),
        (("o1", "o2"), ("in",), ("kh",), ("kw",)), (1,),
    )  # fmt: skip
    plan = build_staged(
        "p", [("hw", ["K"]), ("channels", ["L"])], s, PAD1, (1, 2, 4, 4), "cpu", 10**9
    )
    last = plan.steps[-1]
    assert isinstance(last, PermuteStep) and last.dims == (0, 2, 1, 3)
    assert last.shape == (1, 2, 3, 16) and last.elements == 2 * 6 * 16
    t = tensors_for(s, 3)
    x = torch.randn(1, 2, 4, 4, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), padding=1))


# -- placements --------------------------------------------------------------------------------
def test_cp_placements():
    s = get_format("cp").structure_for((8, 6, 3, 3), 3, legs=LEGS)
    p = Placements(s, ("kh", "kw"))
    assert p.base == {"A2", "A3"} and p.others == ["A0", "A1"]
    assert p.dense() == [("hw", ["A0", "A1", "A2", "A3"])]
    staged = p.staged()
    assert len(staged) == 8  # 3^2 placements of A0, A1 but all-in-the-core
    assert staged[0] == (
        "staged[in=A0,A1 conv=A2,A3]",
        [("channels", ["A0", "A1"]), ("hw", ["A2", "A3"])],
    )
    three = [("channels", ["A1"]), ("hw", ["A2", "A3"]), ("channels", ["A0"])]
    assert ("staged[in=A1 conv=A2,A3 out=A0]", three) in staged
    separable = p.separable()
    assert len(separable) == 24  # per placement 2 * 2^(core factors besides A2, A3)
    h_w = [("channels", ["A1"]), ("h", ["A2"]), ("w", ["A3"]), ("channels", ["A0"])]
    assert ("separable[in=A1 h=A2 w=A3 out=A0]", h_w) in separable
    w_h = [("channels", ["A1"]), ("w", ["A3"]), ("h", ["A2"]), ("channels", ["A0"])]
    assert ("separable[in=A1 w=A3 h=A2 out=A0]", w_h) in separable
    assert ("separable[in=A1 h=A0,A2 w=A3]",
            [("channels", ["A1"]), ("h", ["A0", "A2"]), ("w", ["A3"])]) in separable  # fmt: skip
    assert len({name for name, _ in staged + separable}) == 32


def test_ht_spatial_part_joins_its_holders_by_the_shortest_path():
    s = get_format("ht").structure_for((8, 6, 3, 3), 2, legs=LEGS)
    p = Placements(s, ("kh", "kw"))
    assert p.base == {"U5", "B2", "U6"} and p.others == ["B0", "B1", "U3", "U4"]
    assert len(p.staged()) == 3**4 - 1
    # split: kh part U5 (+ B2 or not), kw part the rest; both must be connected
    names = {name for name, _ in p.separable()}
    assert "separable[in=B0,B1,U3,U4 h=U5 w=B2,U6]" in names
    assert "separable[in=B0,B1,U3,U4 h=B2,U5 w=U6]" in names
    assert "separable[in=B0,B1,U3,U4 w=U6 h=B2,U5]" in names
    # with B0 in the core, the kw part {B0, U6} would not be connected: no such split
    assert "separable[in=B1,U3,U4 h=U5 w=B0,B2,U6]" in names
    assert "separable[in=B1,U3,U4 h=B2,U5 w=B0,U6]" not in names
    assert "separable[in=B1,U3,U4 w=B0,U6 h=B2,U5]" not in names


def test_tt_chain_placements():
    s = get_format("tt").structure_for((8, 6, 3, 3), 2, legs=LEGS, order=("in", "kh", "kw", "out"))
    p = Placements(s, ("kh", "kw"))
    assert p.base == {"G1", "G2"} and p.others == ["G0", "G3"]
    names = [name for name, _ in p.separable()]
    assert "separable[in=G0 h=G1 w=G2 out=G3]" in names
    assert "separable[in=G0 w=G1,G2 h=G3]" not in names


def chain(n_core, n_other):
    """kh - M1 - ... - kw as ``n_core`` factors, plus ``n_other`` factors hanging off it."""
    core = [Factor("H", ("kh", "a1"), (3, 1))]
    core += [Factor(f"M{i}", (f"a{i}", f"a{i + 1}"), (1, 1)) for i in range(1, n_core - 1)]
    core += [Factor("W", (f"a{n_core - 1}", "kw", "b0"), (1, 3, 1))]
    others = [Factor(f"O{i}", (f"b{i}", f"b{i + 1}"), (1, 1)) for i in range(n_other - 2)]
    others += [Factor("I", ("in", f"b{n_other - 2}", "c"), (2, 1, 1))]
    others += [Factor("O", ("out", "c"), (2, 1))]
    factors = tuple(core + others)
    return Structure("custom", LEGS, (2, 2, 3, 3), (1,), factors,
                     (("out",), ("in",), ("kh",), ("kw",)), (1,))  # fmt: skip


def test_placements_limits():
    five = Placements(chain(2, 5), ("kh", "kw"))
    assert len(five.others) == 5 and len(five.staged()) == 3**5 - 1
    six = Placements(chain(2, 6), ("kh", "kw"))
    assert len(six.others) == 6 and six.staged() == [] and six.separable() == []
    eight = Placements(chain(8, 2), ("kh", "kw"))
    assert len(eight.base) == 8 and eight.separable()
    nine = Placements(chain(9, 2), ("kh", "kw"))
    assert len(nine.base) == 9 and nine.staged() and nine.separable() == []


def test_a_chain_plan_runs_like_the_dense_conv():
    s = chain(3, 3)
    t = tensors_for(s, 4)
    x = torch.randn(2, 2, 5, 5, dtype=F64)
    ref = F.conv2d(x, s.contract(t), padding=1)
    p = Placements(s, ("kh", "kw"))
    built = 0
    for name, stages in p.staged() + p.separable():
        plan = build_staged(name, stages, s, PAD1, (2, 2, 5, 5), "cpu", 10**9)
        if plan is not None:
            built += 1
            torch.testing.assert_close(plan(x, t), ref, msg=name)
    assert built >= 4


def test_a_kernel_of_unconnected_factors_is_one_spatial_part():
    s = Structure(
        "custom", LEGS, (2, 2, 3, 3), (1,),
        (Factor("A", ("out", "in", "kh"), (2, 2, 3)), Factor("B", ("kw",), (3,))),
        (("out",), ("in",), ("kh",), ("kw",)), (1,),
    )  # fmt: skip
    p = Placements(s, ("kh", "kw"))
    assert p.base == {"A", "B"} and p.others == [] and p.staged() == []
    plan = build_staged("dense", p.dense(), s, PAD1, (1, 2, 4, 4), "cpu", 10**9)
    t = tensors_for(s, 5)
    x = torch.randn(1, 2, 4, 4, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), padding=1))


def test_only_a_plain_matmul_before_a_channels_last_conv_writes_channels_last():
    from tensornet.nn.staging import _channels_last_inputs

    w = WeightExpr.build([Factor("X", ("c", "a"), (3, 2))], ("c", "a"), (1, 3, 2))
    k = WeightExpr.build([Factor("K", ("c", "h", "w"), (3, 3, 3))], ("c", "h", "w"), (3, 1, 3, 3))
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    for view, wanted in (
        ((2, 1, 1, 2, 25), True),
        ((2, 3, 1, 2, 25), False),
        ((2, 1, 2, 1, 25), False),
    ):
        for layout in (True, False):
            matmul = MatmulStep("matmul", 0, 0, "m", w, view)
            conv = ConvStep("depthwise", 0, 0, "c", k, (2, 3, 5, 5), geo, 3, channels_last=layout)
            _channels_last_inputs([matmul, conv])
            assert matmul.channels_last == (wanted and layout)
    conv = ConvStep("depthwise", 0, 0, "c", k, (2, 3, 5, 5), geo, 3, channels_last=True)
    first = ConvStep("conv", 0, 0, "c", k, (2, 3, 5, 5), geo)
    _channels_last_inputs([first, conv])  # a conv before it: nothing to set
    assert not first.channels_last


def test_a_network_with_nothing_outside_its_spatial_part_splits_whole():
    """A cut network ``out, kh | in, kw`` has no channel factor: its kh | kw split is the plan."""
    legs = ("out", "in", "kh", "kw")
    s = get_format("cut").structure_for((8, 6, 3, 3), 4, legs=legs, cuts=[("out", "kh")])
    p = Placements(s, ("kh", "kw"))
    assert p.others == [] and p.staged() == []
    assert p.separable() == [
        ("separable[h=G0 w=G1]", [("h", ["G0"]), ("w", ["G1"])]),
        ("separable[w=G1 h=G0]", [("w", ["G1"]), ("h", ["G0"])]),
    ]
    # with a factor outside the spatial part only the assignments split (none whole)
    t = get_format("cut").structure_for((8, 6, 3, 3), 4, legs=legs, cuts=[("out", "kh"), ("out",)])
    names = [n for n, _ in Placements(t, ("kh", "kw")).separable()]
    assert names and all("out=" in n or "in=" in n for n in names)
