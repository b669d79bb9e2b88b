"""torch.compile and torch.export of compressed layers and whole compressed models.

Whole models are traced cold (no forward before ``torch.compile``), so each layer's plan is
chosen while Dynamo traces; ``fullgraph=True`` proves there is no graph break. The broad matrix
runs Dynamo with the ``eager`` backend (Dynamo is where plans were traced wrongly), one model
goes through AOT autograd (``aot_eager``) with gradients, and one small model through the
default backend (inductor). Exports use a dynamic batch dimension and run at batch sizes other
than the example's.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

import tensornet.nn as tnn
from models import build_model
from tensornet.nn import TNConv2d, TNLinear

# every conv layer of ResNet-20 in one of four formats (first match wins)
MIXED = {"layer1.*": "tt", "layer2.*": "cp", "layer3.0.*": "grouped", "conv": "tucker2"}
FORMATS = {"tucker2": "tucker2", "tt": "tt", "cp": "cp", "grouped": "grouped", "mixed": MIXED}


def images(batch: int, seed: int = 1, channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def compressed(name: str, fmt, fraction: float = 0.25) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, 1, 10, 8).eval()
    small, _ = tnn.compress(model, fmt, fraction=fraction)
    return small.eval()


def tn_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, (TNConv2d, TNLinear))]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# -- whole models ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_compiled_resnet20_equals_eager(fmt):
    """One graph (fullgraph) for the whole compressed ResNet-20, traced before any eager forward,
    equal to eager to 1e-5 (the mixed model also at a new batch size: a dynamic-batch retrace).
    """
    model = compressed("resnet20", FORMATS[fmt])
    layers = tn_layers(model)
    assert len(layers) == 18 and {m.format for m in layers} == (
        {"tt", "cp", "grouped", "tucker2"} if fmt == "mixed" else {fmt}
    )
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    batches = (4, 6) if fmt == "mixed" else (4,)
    with torch.no_grad():
        for batch in batches:
            x = images(batch, seed=batch)
            close(compiled(x), model(x))
    # the graph ran the plans eager chose for each shape (no other plan was made)
    assert all(sorted(k[0][0] for k in m._plans) == list(batches) for m in layers)


@pytest.mark.parametrize("name, fmt", [("resnet18", "tt"), ("vgg16", "tucker2")])
def test_compiled_resnet18_and_vgg16_equal_eager(name, fmt):
    model = compressed(name, fmt)
    assert tn_layers(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = images(3)
    with torch.no_grad():
        close(compiled(x), model(x))


def small_model() -> nn.Module:
    """Compressed convs in four formats and plans (depthwise shifts, permutes, patches) and a
    compressed linear."""
    torch.manual_seed(5)
    return nn.Sequential(
        TNConv2d(3, 8, 3, padding=1, format="cp", ranks=3, plan="separable"),
        nn.ReLU(),
        TNConv2d(8, 8, 3, padding=1, format="tt", ranks=2, plan="separable[in=G0,G3 h=G1 w=G2]"),
        TNConv2d(8, 8, 3, stride=2, padding=1, format="tucker2", ranks=(4, 4), plan="staged"),
        TNConv2d(8, 6, 3, padding=1, format="grouped", ranks=2, plan="patches"),
        nn.Flatten(),
        TNLinear(6 * 3 * 3, 5, format="svd", ranks=4, plan="direct"),
    )


def test_aot_autograd_values_and_gradients():
    """Through AOT autograd (functionalised, decomposed) outputs and factor gradients equal
    eager's."""
    model = small_model()
    twin = copy.deepcopy(model)
    x = images(2, channels=3, size=6)
    out = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    ref = twin(x)
    close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip(tn_layers(model), tn_layers(twin)):
        for name, p in a.factors.items():
            close(p.grad, b.factors[name].grad)


def test_export_resnet20_with_dynamic_batch():
    """``torch.export`` with a symbolic batch size: one program for every batch size; the
    plans are those chosen for the example's batch, and the program needs no tensornet."""
    model = compressed("resnet20", MIXED)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(model, (images(4),), dynamic_shapes={"x": {0: batch}})
    assert all(key[0][0] == 4 for m in tn_layers(model) for key in m._plans)
    assert "tensornet" not in str(program.graph_module.code)
    run = program.module()
    with torch.no_grad():
        for n in (4, 7, 1):
            x = images(n, seed=n)
            close(run(x), model(x))


# -- single layers: every kind of step, compiled and exported ----------------------------------
CONV_PLANS = [
    ("tucker2", "staged[in=U_in conv=core out=U_out]"),
    ("cp", "separable[in=A1 h=A2 w=A3 out=A0]"),  # depthwise shifts, grouped 1x1
    ("cp", "separable[in=A1 h=A0,A2 w=A3]"),  # a permute between the convs
    ("tt", "separable[in=G0,G3 h=G1 w=G2]"),
    ("grouped", "staged[conv=V out=U]"),
    ("tucker2", "patches"),
    ("cp", "dense"),
]


@pytest.mark.parametrize("fmt, plan", CONV_PLANS)
def test_conv_plans_compile_and_export_with_free_batch(fmt, plan):
    torch.manual_seed(3)
    layer = TNConv2d(8, 6, 3, padding=1, format=fmt, ranks=2, plan=plan)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x3, x5 = images(3, channels=8, size=6), images(5, seed=2, channels=8, size=6)
    ref3, ref5 = layer(x3), layer(x5)
    assert [k[0] for k in layer._plans] == [(3, 8, 6, 6), (5, 8, 6, 6)]
    assert {p.name for p in layer._plans.values()} == {plan}
    close(compiled(x3), ref3)
    close(compiled(x5), ref5)
    batch = torch.export.Dim("batch", min=1, max=64)
    run = torch.export.export(layer, (x3,), dynamic_shapes={"x": {0: batch}}).module()
    close(run(x5), ref5)
    close(run(x3[:1]), ref3[:1])


def test_prepare_plan_has_the_mark_assume_constant_result_sets():
    """planning marks ``_prepare_plan`` by hand (no torch._dynamo at import): the same mark."""
    from tensornet.nn import planning

    def probe():
        return 0

    marks = set(vars(torch.compiler.assume_constant_result(probe)))
    assert marks == {"_dynamo_marked_constant"}
    assert all(getattr(planning._prepare_plan, m) is getattr(probe, m) for m in marks)


@pytest.mark.parametrize("plan", ["dense", "direct"])
def test_linear_plans_compile_and_export_with_leading_dims(plan):
    """A linear layer on (batch, tokens, features): the flattened batch stays symbolic."""
    torch.manual_seed(4)
    layer = TNLinear(12, 10, format="ttmatrix", ranks=3, in_dims=(3, 4), out_dims=(2, 5), plan=plan)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 12)
    close(compiled(x), layer(x))
    batch = torch.export.Dim("batch", min=1, max=64)
    run = torch.export.export(layer, (x,), dynamic_shapes={"x": {0: batch}}).module()
    y = torch.randn(5, 3, 12)
    close(run(y), layer(y))
    assert {p.name for p in layer._plans.values()} == {plan}


def test_layer_traced_at_two_shapes_is_one_graph():
    """A layer called twice in one forward, at two shapes, gets both plans inside one graph."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(3, 3))

        def forward(self, x):
            return self.conv(x).sum() + self.conv(x[:, :, :5, :5]).sum()

    model = Twice()
    x = images(2, channels=8, size=6)
    out = torch.compile(model, backend="eager", fullgraph=True)(x)
    close(out, model(x))
    assert sorted(k[0] for k in model.conv._plans) == [(2, 8, 5, 5), (2, 8, 6, 6)]


def test_plan_policy_change_retraces():
    """Dynamo guards on ``layer.plan``: a new policy after compiling is traced and used."""
    layer = TNConv2d(8, 8, 3, padding=1, format="cp", ranks=2, plan="dense")
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x = images(2, channels=8, size=6)
    ref = layer(x)
    close(compiled(x), ref)
    layer.plan = "patches"
    close(compiled(x), ref)
    assert {k[3] for k in layer._plans} == {"dense", "patches"}


def test_compiled_layer_pickles_and_copies():
    """A layer with cached and traced plans pickles and deep-copies (programs are rebuilt)."""
    layer = TNConv2d(8, 8, 3, padding=1, format="tt", ranks=2, plan="staged")
    x = images(2, channels=8, size=6)
    torch.compile(layer, backend="eager", fullgraph=True)(x)
    for other in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)


def test_inductor_compiles_a_compressed_model():
    """The default backend (inductor) on the small model."""
    model = small_model().eval()
    x = images(2, channels=3, size=6)
    with torch.no_grad():
        close(torch.compile(model, fullgraph=True)(x), model(x))
