"""The registry of forward-plan families: a new forward is one registered function that the cost
model can choose and a layer can force, and the built-in families keep their names and order."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tensornet.formats import get_format
from tensornet.nn import TNConv2d, TNLinear, cost
from tensornet.nn.functional import (
    candidates,
    conv_candidates,
    families,
    linear_candidates,
    plan_names,
    register_forward,
    unregister_forward,
)
from tensornet.nn.geometry import ConvGeometry
from tensornet.nn.layers import conv_plan_names
from tensornet.nn.plans import ForwardPlan, MatmulStep, Step, UnfoldStep, WeightExpr

F64 = torch.float64
LEGS = ("out", "in", "kh", "kw")
PAD1 = ConvGeometry.from_conv_args((3, 3), padding=1)


def im2col(structure, geometry, input_shape, device_type):
    """Unfold the input, then one matmul with the rebuilt kernel (a test family)."""
    batch, channels, rows, cols = input_shape
    kh, kw = geometry.kernel
    oh, ow = geometry.output_size(rows, cols)
    out = structure.shape[0]
    k = channels * kh * kw
    legs = tuple(leg for modes in structure.modes for leg in modes)
    weight = WeightExpr.build(structure.factors, legs, (1, out, k))
    unfold = UnfoldStep("unfold", 0, batch * k * oh * ow, "unfold", geometry, input_shape)
    flops = 2 * batch * out * k * oh * ow
    matmul = MatmulStep(
        "matmul", flops, batch * (k + out) * oh * ow, "im2col", weight, (batch, 1, 1, k, oh * ow)
    )
    return [ForwardPlan("im2col", [unfold, matmul], (batch, out, oh, ow))]


@pytest.fixture
def registered():
    register_forward("conv", "im2col")(im2col)
    yield "im2col"
    unregister_forward("conv", "im2col")


def cheap_matmul_table():
    """A CPU table in which only unfolds and matmuls cost (next to) nothing."""
    base = cost.costs_for("cpu")
    slow = {k: 1e3 for k in base.rate}
    fast = {"matmul": 1e18, "unfold": 1e18, "copy": 1e18}
    zero = dict.fromkeys(base.overhead, 0.0)
    return replace(
        base,
        rate={**slow, **fast},
        bandwidth={**slow, **fast},
        overhead=zero,
        per_image={},
        source="test",
    )


def test_a_registered_family_is_forced_and_matches_the_dense_conv(registered):
    torch.manual_seed(0)
    layer = TNConv2d(
        6, 8, 3, stride=2, padding=1, format="tucker2", ranks=(4, 3), plan="im2col", dtype=F64
    )
    x = torch.randn(3, 6, 9, 7, dtype=F64)
    ref = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=1)
    y = layer(x)
    assert (y - ref).abs().max() < 1e-6 * ref.abs().max()
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    chosen = next(iter(layer._plans.values()))
    assert (chosen.name, chosen.family) == ("im2col", "im2col")
    assert chosen.describe() == "unfold -> im2col"


def test_the_cost_model_chooses_a_registered_family_when_it_is_cheapest(registered):
    torch.manual_seed(1)
    layer = TNConv2d(6, 8, 3, padding=1, format="cp", ranks=4, dtype=F64)
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    assert layer.plan_info(x.shape).chosen != "im2col"  # the default table prices it higher
    plans = conv_candidates(layer.structure, layer.geometry, x.shape)
    assert cost.choose(plans, "cpu", 8, cheap_matmul_table()).name == "im2col"
    cost.set_costs("cpu", cheap_matmul_table())
    try:
        layer.clear_plans()
        info = layer.plan_info(x.shape)
        y = layer(x)
    finally:
        cost.set_costs("cpu", None)
    assert info.chosen == "im2col" and "im2col" in {r["name"] for r in info.rows}
    assert next(iter(layer._plans.values())).name == "im2col"
    ref = F.conv2d(x, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_a_registered_family_is_a_valid_plan_name_until_it_is_removed():
    register_forward("conv", "im2col")(im2col)
    try:
        layer = TNConv2d(6, 8, 3, format="cp", ranks=2, plan="im2col")
        names = conv_plan_names(layer.structure)
        assert names[:5] == ("dense", "staged", "separable", "patches", "im2col")
        assert families("conv")[-1] == "im2col"
    finally:
        unregister_forward("conv", "im2col")
    assert "im2col" not in families("conv")
    with pytest.raises(ValueError, match="^TNConv2d: unknown plan 'im2col'"):
        TNConv2d(6, 8, 3, format="cp", ranks=2, plan="im2col")
    with pytest.raises(ValueError, match=r"plan='im2col' is not a candidate here"):
        layer(torch.randn(1, 6, 5, 5))  # set when it was registered: refused at the forward


def test_a_family_names_decide_where_it_applies():
    built = []

    def only_wide(structure, geometry, input_shape, device_type):
        built.append(input_shape)
        return im2col(structure, geometry, input_shape, device_type)

    names = lambda s: ("wide",) if s.shape[0] > 4 else ()  # noqa: E731
    register_forward("conv", "wide", names=names)(only_wide)
    try:
        TNConv2d(3, 8, 3, format="tucker2", ranks=2, plan="wide")
        with pytest.raises(ValueError, match="unknown plan 'wide'"):
            TNConv2d(3, 4, 3, format="tucker2", ranks=2, plan="wide")
        assert built == []  # names need no input shape and build nothing
    finally:
        unregister_forward("conv", "wide")


class RebuiltLinear(Step):
    """``h @ W.T`` with ``W`` rebuilt from the factors (a test step)."""

    def __init__(self, weight, n, out, features):
        super().__init__("matmul", 2 * n * out * features, n * (out + features), "h @ W.T")
        self.weight = weight

    def __call__(self, h, tensors):
        w = self.weight(tensors)
        return h @ w.T


def test_a_linear_family_registers_and_runs():
    def rebuilt(structure, geometry, input_shape, device_type):
        n, features = input_shape
        out = structure.shape[0]
        legs = (*structure.modes[0], *structure.modes[1])
        weight = WeightExpr.build(structure.factors, legs, (out, features))
        return [ForwardPlan("rebuilt", [RebuiltLinear(weight, n, out, features)], (n, out))]

    register_forward("linear", "rebuilt")(rebuilt)
    try:
        torch.manual_seed(2)
        layer = TNLinear(10, 6, format="tt", ranks=3, plan="rebuilt", dtype=F64)
        x = torch.randn(4, 5, 10, dtype=F64)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        assert next(iter(layer._plans.values())).family == "rebuilt"
        assert plan_names("linear", layer.structure)["rebuilt"] == ("rebuilt",)
    finally:
        unregister_forward("linear", "rebuilt")


@pytest.mark.parametrize(
    ("kind", "family", "message"),
    [
        ("conv4d", "x", "kind must be one of"),
        ("conv", "", "family must be a non-empty name"),
        ("conv", "auto", "family must be a non-empty name other than"),
        ("linear", "measure", "other than"),
        ("conv", 3, "got 3"),
        ("conv", "dense", "conv family 'dense' is already registered"),
        ("linear", "direct", "linear family 'direct' is already registered"),
    ],
)
def test_bad_registrations_are_refused(kind, family, message):
    with pytest.raises(ValueError, match=message):
        register_forward(kind, family)
    assert families("conv")[:4] == ("dense", "staged", "separable", "patches")


def test_replace_swaps_a_family_and_unregister_names_a_missing_one():
    from tensornet.nn import functional

    original = functional._REGISTRY["linear"]["direct"]
    try:
        register_forward("linear", "direct", replace=True)(lambda *a: [])
        s = get_format("svd").structure_for((6, 4), (2,), legs=("out", "in"))
        assert [p.name for p in linear_candidates(s, (3, 4))] == ["dense"]
    finally:
        functional._REGISTRY["linear"]["direct"] = original
    with pytest.raises(KeyError, match="no conv forward family 'nothing'"):
        unregister_forward("conv", "nothing")
    with pytest.raises(KeyError, match="no norm forward family 'dense'"):
        unregister_forward("norm", "dense")


def test_every_built_in_plan_records_its_family():
    s = get_format("cp").structure_for((8, 6, 3, 3), 3, legs=LEGS)
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    plans = conv_candidates(s, geo, (2, 6, 5, 5))
    by_family = {}
    for p in plans:
        by_family.setdefault(p.family, []).append(p.name)
    assert list(by_family) == ["dense", "staged", "separable", "patches"]
    assert by_family["dense"] == ["dense"] and by_family["patches"] == ["patches"]
    for family in ("staged", "separable"):
        assert all(n.startswith(family + "[") for n in by_family[family])
    names = plan_names("conv", s)
    assert all(set(by_family[f]) <= set(names[f]) for f in by_family)
    lin = get_format("svd").structure_for((6, 4), (2,), legs=("out", "in"))
    assert [(p.name, p.family) for p in linear_candidates(lin, (3, 4))] == [
        ("dense", "dense"),
        ("direct", "direct"),
    ]
    assert [p.name for p in candidates("linear", lin, None, (3, 4))] == ["dense", "direct"]


# -- the built-in families' plans, counted by hand ---------------------------------------------
def cp_structure():
    return get_format("cp").structure_for((8, 6, 3, 3), 3, legs=LEGS)


def test_the_patches_plan_counts():
    from tensornet.core.einsum import plan_einsum

    s = cp_structure()
    geo = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1)
    (plan,) = [p for p in conv_candidates(s, geo, (2, 6, 7, 7)) if p.family == "patches"]
    unfold, ein = plan.steps
    positions = 16
    assert (unfold.kind, unfold.flops, unfold.label) == ("unfold", 0, "unfold 3x3")
    assert unfold.elements == 2 * 6 * (49 + 9 * positions) and unfold.view == (2, 6, 7, 7)
    limit = (9 + 1) * max(2 * 6 * 49, 2 * 8 * positions)
    patch_shape = (2, 6, 3, 3, positions)
    inputs = [("__batch", "in", "kh", "kw", "__patches")] + [f.legs for f in s.factors]
    shapes = [patch_shape] + [f.shape for f in s.factors]
    ref, _ = plan_einsum(inputs, shapes, ("__batch", "out", "__patches"), memory_limit=limit)
    assert (ein.kind, ein.flops, ein.label) == ("einsum", ref.flops, "einsum(patches, factors)")
    assert ein.elements == 2 * (6 * 9 + 8) * positions and ein.view == patch_shape
    assert ein.names == ("A0", "A1", "A2", "A3")
    assert plan.peak_elements == max(2 * 6 * 9 * positions, ref.largest_intermediate)
    assert plan.output_shape == (2, 8, 4, 4)
    gen = torch.Generator().manual_seed(5)
    t = {f.name: torch.randn(f.shape, generator=gen, dtype=F64) for f in s.factors}
    x = torch.randn(2, 6, 7, 7, dtype=F64)
    torch.testing.assert_close(plan(x, t), F.conv2d(x, s.contract(t), stride=2, padding=1))


def test_the_intermediate_limit_drops_staged_plans_larger_than_the_patches():
    from tensornet.nn import functional

    s = cp_structure()
    geo = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1)
    assert functional.max_elements(s, geo, (2, 6, 7, 7)) == 10 * 2 * 6 * 49
    wide = ConvGeometry.from_conv_args((3, 3), padding=1)
    assert functional.max_elements(s, wide, (2, 6, 5, 5)) == 10 * 2 * 8 * 25
    # a rank far above the channels: staging through it is larger than the patches
    big = get_format("cp").structure_for((2, 2, 3, 3), 300, legs=LEGS)
    names = {p.family for p in conv_candidates(big, wide, (1, 2, 5, 5))}
    assert names == {"dense", "patches"}
    small = get_format("cp").structure_for((2, 2, 3, 3), 2, legs=LEGS)
    assert {p.family for p in conv_candidates(small, wide, (1, 2, 5, 5))} == {
        "dense",
        "staged",
        "separable",
        "patches",
    }


def test_the_linear_plans_count():
    from tensornet.core.einsum import plan_einsum

    s = get_format("svd").structure_for((6, 10), (3,), legs=("out", "in"))
    dense, direct = linear_candidates(s, (4, 10))
    weight = WeightExpr.build(s.factors, ("out", "in"), (1, 6, 10))
    (step,) = dense.steps
    assert (step.kind, step.label) == ("matmul", "linear 10->6")
    assert step.flops == 2 * 4 * 10 * 6 + weight.flops and weight.flops > 0
    assert step.elements == 4 * 16 and step.inner.view == (1, 4, 1, 10, 1)
    assert dense.peak_elements == 24 and dense.output_shape == (4, 6)
    inputs = [("__batch", "in")] + [f.legs for f in s.factors]
    ref, _ = plan_einsum(inputs, [(4, 10)] + [f.shape for f in s.factors], ("__batch", "out"))
    (ein,) = direct.steps
    assert (ein.kind, ein.flops, ein.label) == ("einsum", ref.flops, "einsum(input, factors)")
    assert ein.elements == 4 * 16 and ein.view == (4, 10)
    assert direct.peak_elements == max(ref.largest_intermediate, 24)
    gen = torch.Generator().manual_seed(6)
    t = {f.name: torch.randn(f.shape, generator=gen, dtype=F64) for f in s.factors}
    x = torch.randn(4, 10, dtype=F64)
    for plan in (dense, direct):
        torch.testing.assert_close(plan(x, t), x @ s.contract(t).T)


def test_a_tensorized_spatial_leg_has_no_plans_and_no_names():
    from tensornet.formats.structure import Factor, Structure

    s = Structure(
        "custom", LEGS, (2, 2, 4, 1), (1,),
        (Factor("A", ("out", "in", "h1", "h2", "kw"), (2, 2, 2, 2, 1)),),
        (("out",), ("in",), ("h1", "h2"), ("kw",)), (1,),
    )  # fmt: skip
    geo = ConvGeometry.from_conv_args((4, 1))
    assert conv_candidates(s, geo, (1, 2, 5, 5)) == []
    assert plan_names("conv", s) == {}
    with pytest.raises(ValueError, match="^choose: no candidate plans"):
        cost.choose(conv_candidates(s, geo, (1, 2, 5, 5)), "cpu", 8)


def test_the_decorator_returns_the_builder_and_names_default_to_the_family():
    def build(structure, geometry, input_shape, device_type):
        return []

    assert register_forward("linear", "nothing")(build) is build
    try:
        s = get_format("svd").structure_for((6, 4), (2,), legs=("out", "in"))
        assert plan_names("linear", s)["nothing"] == ("nothing",)
        assert [p.family for p in linear_candidates(s, (3, 4))] == ["dense", "direct"]
    finally:
        unregister_forward("linear", "nothing")


def test_the_device_type_reaches_every_family_and_defaults_to_cpu():
    seen = []

    def record(structure, geometry, input_shape, device_type):
        seen.append((geometry is None, input_shape, device_type))
        return []

    register_forward("conv", "record")(record)
    register_forward("linear", "record")(record)
    try:
        s = cp_structure()
        conv_candidates(s, PAD1, [2, 6, 5, 5])
        conv_candidates(s, PAD1, (2, 6, 5, 5), "cuda")
        candidates("conv", s, PAD1, (1, 6, 5, 5))
        lin = get_format("svd").structure_for((6, 4), (2,), legs=("out", "in"))
        linear_candidates(lin, [3, 4])
        linear_candidates(lin, (3, 4), "meta")
        assert seen == [
            (False, (2, 6, 5, 5), "cpu"),
            (False, (2, 6, 5, 5), "cuda"),
            (False, (1, 6, 5, 5), "cpu"),
            (True, (3, 4), "cpu"),
            (True, (3, 4), "meta"),
        ]
        kinds = {st.kind for p in conv_candidates(s, PAD1, (2, 6, 5, 5)) for st in p.steps}
        assert "depthwise" in kinds  # the CPU's shifted depthwise convs
        cuda = {st.kind for p in conv_candidates(s, PAD1, (2, 6, 5, 5), "cuda") for st in p.steps}
        assert "depthwise" not in cuda and "grouped" in cuda
    finally:
        unregister_forward("conv", "record")
        unregister_forward("linear", "record")


def test_the_intermediate_limit_of_a_non_square_kernel():
    from tensornet.nn import functional

    s = get_format("cp").structure_for((8, 6, 3, 5), 3, legs=LEGS)
    geo = ConvGeometry.from_conv_args((3, 5), padding=(1, 2))
    assert functional.max_elements(s, geo, (2, 6, 5, 5)) == 16 * 2 * 8 * 25
