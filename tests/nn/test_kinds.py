"""The layer-kind registry, and compress / allocate / select over every supported kind."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tensornet.nn import (
    TNConv1d,
    TNConv2d,
    TNConv3d,
    TNConvTranspose2d,
    TNLinear,
    allocate,
    compress,
    dense_flops,
    dense_seconds,
    describe,
    load,
    save,
    select_layers,
)
from tensornet.nn import kinds as kinds_module
from tensornet.nn.defaults import default_format, kernel_class
from tensornet.nn.kinds import (
    LayerKind,
    kind_named,
    kind_of,
    kinds,
    layer_kind_of,
    record_args,
    register_kind,
    unsupported_reason,
)

UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"


class Mixed(nn.Module):
    """A model with every supported kind (float64)."""

    def __init__(self):
        super().__init__()
        opts = {"dtype": torch.float64}
        self.stem = nn.Conv2d(3, 4, 3, padding=1, **opts)
        self.seq = nn.Conv1d(4, 6, 3, padding=2, dilation=2, padding_mode="reflect", **opts)
        self.vol = nn.Conv3d(2, 4, (2, 3, 3), stride=(1, 2, 1), padding=1, **opts)
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, **opts)
        self.head = nn.Linear(6, 5, **opts)

    def forward(self, image, signal, volume):
        a = self.up(self.stem(image))
        b = self.head(self.seq(signal).mean(-1))
        return a, b, self.vol(volume)


def _inputs():
    torch.manual_seed(0)
    return (
        torch.randn(2, 3, 5, 5, dtype=torch.float64),
        torch.randn(2, 4, 9, dtype=torch.float64),
        torch.randn(2, 2, 3, 6, 5, dtype=torch.float64),
    )


def test_registry_maps_every_torch_type_to_its_layer_and_back():
    expected = {
        "linear": (nn.Linear, TNLinear),
        "conv1d": (nn.Conv1d, TNConv1d),
        "conv2d": (nn.Conv2d, TNConv2d),
        "conv3d": (nn.Conv3d, TNConv3d),
        "conv_transpose2d": (nn.ConvTranspose2d, TNConvTranspose2d),
    }
    assert [k.name for k in kinds()] == list(expected)
    for name, (torch_type, tn_type) in expected.items():
        kind = kind_named(name)
        assert (kind.torch_type, kind.tn_type) == (torch_type, tn_type)
    assert kind_of(nn.LazyConv1d(3, 3)).name == "conv1d"  # subclasses by their nearest base
    assert kind_of(TNConv2d(2, 2, 1, format="svd", ranks=1)) is None
    assert layer_kind_of(TNConv3d(2, 2, 1, format="svd", ranks=1)).name == "conv3d"
    assert layer_kind_of(nn.Conv3d(2, 2, 1)) is None and kind_of(nn.ReLU()) is None
    assert kind_named("conv3d").spatial_dims == 3 and kind_named("linear").spatial_dims == 0
    assert kind_named("conv_transpose2d").kernel_shape(
        {"in_channels": 4, "out_channels": 3, "kernel_size": [2, 5]}
    ) == [4, 3, 2, 5]
    assert kind_named("conv1d").kernel_shape(
        {"in_channels": 4, "out_channels": 3, "kernel_size": [5]}
    ) == [3, 4, 5]
    with pytest.raises(ValueError, match=r"field 'kind' must be one of \['linear', 'conv1d'"):
        kind_named("conv4d")


def test_register_kind_refuses_duplicates_unless_replacing():
    conv3d = kind_named("conv3d")
    with pytest.raises(ValueError, match="a kind 'conv3d' is already registered"):
        register_kind(conv3d)
    with pytest.raises(TypeError, match="expected a LayerKind, got str"):
        register_kind("conv3d")
    twin = LayerKind(
        "conv3d_b",
        nn.Conv3d,
        TNConv3d,
        "conv",
        conv3d.legs,
        conv3d.fields,
        conv3d.from_module,
        conv3d.to_module,
    )
    with pytest.raises(ValueError, match="already registered"):
        register_kind(twin)  # the torch type is taken
    snapshot = dict(kinds_module._KINDS)
    try:
        assert register_kind(twin, replace=True) is twin
        assert kind_of(nn.Conv3d(2, 2, 1)).name == "conv3d_b"
        assert [k.name for k in kinds()][-1] == "conv3d_b" and len(kinds()) == len(snapshot)
        register_kind(conv3d, replace=True)
        assert "conv3d_b" not in [k.name for k in kinds()]
    finally:
        kinds_module._KINDS.clear()
        kinds_module._KINDS.update(snapshot)
    assert kind_of(nn.Conv3d(2, 2, 1)) is conv3d


@pytest.mark.parametrize(
    "module, reason",
    [
        (nn.Conv1d(4, 4, 3), None),
        (nn.Conv3d(4, 4, 3), None),
        (nn.ConvTranspose2d(4, 4, 3), None),
        (nn.Linear(2, 2), None),
        (nn.Conv1d(4, 4, 3, groups=2), "groups=2 is not supported (only groups=1)"),
        (nn.ConvTranspose2d(4, 4, 3, groups=4), "groups=4 is not supported (only groups=1)"),
        (
            nn.ConvTranspose3d(4, 4, 3),
            "ConvTranspose3d is not supported (no compressed layer; "
            "supported: Linear, Conv1d, Conv2d, Conv3d, ConvTranspose2d)",
        ),
        (
            nn.ConvTranspose1d(4, 4, 3),
            "ConvTranspose1d is not supported (no compressed layer; "
            "supported: Linear, Conv1d, Conv2d, Conv3d, ConvTranspose2d)",
        ),
        (nn.ReLU(), "ReLU is not a conv or linear layer"),
    ],
)
def test_unsupported_reason_names_what_is_skipped(module, reason):
    assert unsupported_reason(module) == reason


def test_select_layers_takes_the_new_kinds_and_names_the_skipped():
    net = nn.Sequential(
        nn.Conv1d(2, 2, 1),
        nn.ConvTranspose3d(2, 2, 1),
        nn.ConvTranspose2d(2, 2, 1),
        nn.Conv3d(2, 2, 1),
    )
    assert select_layers(net) == ["0", "2", "3"]
    assert select_layers(net, include_unsupported=True) == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="layer '1' cannot be compressed: ConvTranspose3d is"):
        select_layers(net, ["1"])


def test_record_args_are_the_json_form_of_every_kind():
    conv = nn.Conv3d(2, 3, (1, 2, 3), stride=2, padding="same" if False else 1, bias=False)
    assert record_args(conv, kind_named("conv3d")) == {
        "in_channels": 2,
        "out_channels": 3,
        "kernel_size": [1, 2, 3],
        "stride": [2, 2, 2],
        "padding": [1, 1, 1],
        "dilation": [1, 1, 1],
        "padding_mode": "zeros",
        "bias": False,
    }
    up = nn.ConvTranspose2d(4, 3, 3, stride=2, output_padding=1)
    assert record_args(up, kind_named("conv_transpose2d"))["output_padding"] == [1, 1]
    assert record_args(nn.Conv1d(2, 2, 3, padding="same"), kind_named("conv1d"))["padding"] == (
        "same"
    )
    assert record_args(nn.Linear(3, 2), kind_named("linear")) == {
        "in_features": 3,
        "out_features": 2,
        "bias": True,
    }


@pytest.mark.parametrize("fmt", ["tucker2", "tt", "svd"])
def test_compress_a_model_of_every_kind_is_exact_at_full_rank(fmt):
    net, x = Mixed(), _inputs()
    small, report = compress(net, fmt, ranks=10**6, skip=(), example_input=x, measure_time=False)
    kinds_after = {n: type(m).__name__ for n, m in small.named_children()}
    assert kinds_after == {
        "stem": "TNConv2d",
        "seq": "TNConv1d",
        "vol": "TNConv3d",
        "up": "TNConvTranspose2d",
        "head": "TNLinear",
    }
    for a, b in zip(net(*x), small(*x)):
        torch.testing.assert_close(b, a, atol=1e-8, rtol=0)
    rows = {r.name: r for r in report.layers}
    assert rows["vol"].kind == "conv" and rows["head"].kind == "linear"
    assert rows["vol"].flops_before == dense_flops(net.vol, (2, 2, 3, 6, 5))
    assert all(r.error_fro < 1e-12 for r in report.layers)


def test_compress_plan_families_per_kind():
    net = Mixed()
    small, _ = compress(net, "tucker2", ranks=2, skip=(), layers="vol|up", plan="staged")
    assert small.vol.plan == "staged" and small.up.plan == "staged"
    with pytest.raises(
        ValueError, match="plan='patches' is not a forward plan of conv layer 'vol'"
    ):
        compress(net, "tucker2", ranks=2, skip=(), layers="vol", plan="patches")


def test_dense_flops_and_seconds_of_every_conv():
    assert dense_flops(nn.Conv1d(2, 3, 3, padding=1), (4, 2, 10)) == 2 * 4 * 3 * 2 * 3 * 10
    assert dense_flops(nn.Conv3d(2, 3, 3), (1, 2, 4, 5, 6)) == 2 * 3 * 2 * 27 * (2 * 3 * 4)
    up = nn.ConvTranspose2d(2, 3, 3, stride=2)
    assert dense_flops(up, (1, 2, 4, 5)) == 2 * 2 * 3 * 9 * 20
    deep = nn.ConvTranspose3d(2, 3, 3)
    assert dense_flops(deep, (1, 2, 2, 2, 2)) == 2 * 2 * 3 * 27 * 8
    for module, shape in [
        (up, (1, 2, 4, 5)),
        (deep, (1, 2, 2, 2, 2)),
        (nn.Conv1d(2, 3, 3), (2, 2, 9)),
        (nn.Conv3d(2, 3, 3), (1, 2, 4, 4, 4)),
    ]:
        assert 0 < dense_seconds(module, shape) < 1


def test_defaults_know_every_kind():
    assert kernel_class(nn.Conv1d(2, 2, 5)) == "5" and kernel_class(nn.Conv3d(2, 2, 3)) == "3x3x3"
    assert default_format(nn.ConvTranspose2d(2, 2, 3)) == ("svd", {})
    with pytest.raises(TypeError, match="expected an nn.Conv2d or nn.Linear, got ReLU"):
        default_format(nn.ReLU())


def test_allocate_and_compress_over_the_new_kinds():
    net, x = Mixed(), _inputs()
    alloc = allocate(net, 0.6, skip=(), example_input=x)
    assert set(alloc.layers) == {"stem", "seq", "vol", "up", "head"}
    small, report = compress(net, allocation=alloc, example_input=x, measure_time=False)
    for a, b in zip(net(*x), small(*x)):
        assert a.shape == b.shape
    assert report.params_after <= report.params_before


def _saved(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(
        TNConv1d(2, 3, 3, padding="same", format="tt", ranks=2),
        TNConv3d(3, 2, (1, 2, 3), stride=(1, 1, 2), padding=(0, 1, 1), format="tt", ranks=2),
        TNConvTranspose2d(2, 2, 3, stride=2, output_padding=1, format="tt", ranks=2),
    )
    path = tmp_path / "m.safetensors"
    save(model, os.fspath(path))
    return model, path


def _dense():
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding="same"),
        nn.Conv3d(3, 2, (1, 2, 3), stride=(1, 1, 2), padding=(0, 1, 1)),
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=1),
    )


def test_describe_records_each_kind_in_its_own_dimension(tmp_path):
    model, _ = _saved(tmp_path)
    records = describe(model)
    assert [records[k]["kind"] for k in "012"] == ["conv1d", "conv3d", "conv_transpose2d"]
    assert records["0"]["kernel_size"] == [3] and records["0"]["padding"] == "same"
    assert records["1"]["stride"] == [1, 1, 2] and records["1"]["padding"] == [0, 1, 1]
    assert records["2"]["output_padding"] == [1, 1]
    assert records["2"]["structure"]["legs"] == ["in", "out", "kh", "kw"]
    assert records["0"]["structure"]["shape"] == [3, 2, 3]


@pytest.mark.parametrize(
    "layer, key, value, message",
    [
        ("0", "kernel_size", [3, 3], r"field 'kernel_size' must be a list of 1 ints >= 1"),
        ("0", "padding", [1, 1], r"field 'padding' must be 'same', 'valid' or a list of 1 ints"),
        ("0", "padding", "full", r"field 'padding' must be 'same', 'valid' or a list of 1"),
        ("1", "dilation", [1, 1], r"field 'dilation' must be a list of 3 ints >= 1"),
        ("1", "stride", [1, 1, 0], r"field 'stride' must be a list of 3 ints >= 1"),
        ("2", "output_padding", [1], r"field 'output_padding' must be a list of 2 ints >= 0"),
        ("2", "output_padding", [0, 0], r"field 'output_padding' is \[0, 0\] but the model"),
        ("1", "padding", [0, 1, 2], r"field 'padding' is \[0, 1, 2\] but the model's Conv3d"),
        ("2", "kind", "conv3d", r"layer '2' has unknown field\(s\) \['output_padding'\]"),
    ],
)
def test_load_checks_the_records_of_the_new_kinds(tmp_path, layer, key, value, message):
    _, path = _saved(tmp_path)
    m, t = {}, {}
    with safe_open(os.fspath(path), framework="pt") as f:
        m = dict(f.metadata())
        t = {k: f.get_tensor(k) for k in f.keys()}
    data = json.loads(m["tensornet"])
    data["layers"][layer][key] = value
    m["tensornet"] = json.dumps(data)
    bad = os.fspath(tmp_path / "bad.safetensors")
    save_file(t, bad, metadata=m)
    fresh = _dense()
    with pytest.raises(ValueError, match=message):
        load(fresh, bad)
    assert [type(x).__name__ for x in fresh] == ["Conv1d", "Conv3d", "ConvTranspose2d"]


def test_load_builds_each_kind_on_its_module(tmp_path):
    model, path = _saved(tmp_path)
    wrong = _dense()
    wrong[1] = nn.Conv2d(3, 2, 3)
    with pytest.raises(ValueError, match="the record is a conv3d layer but the model has a Conv2d"):
        load(wrong, os.fspath(path))
    fresh = _dense().double()
    load(fresh, os.fspath(path))
    assert [type(x).__name__ for x in fresh] == ["TNConv1d", "TNConv3d", "TNConvTranspose2d"]
    assert [x.plan for x in fresh] == ["auto"] * 3
    assert all(p.dtype == torch.float64 for p in fresh.parameters())
    x = torch.randn(1, 2, 6)
    assert torch.allclose(fresh[0](x.double()), model[0](x).double(), atol=1e-6)
    assert fresh[1].factors["G0"].dtype == torch.float64


@pytest.mark.skipif(UNDER_MUTMUT, reason="dynamo does not trace mutmut's trampolines")
def test_every_new_kind_compiles_without_a_graph_break():
    torch.manual_seed(6)
    model = nn.Sequential(
        TNConv1d(2, 3, 3, padding=1, format="tucker2", ranks=(2, 2)),
        nn.Unflatten(2, (2, 2, 2)),
        TNConv3d(3, 4, 3, padding=1, format="cp", ranks=2),
        nn.Flatten(2, 3),
        TNConvTranspose2d(4, 2, 3, stride=2, format="tt", ranks=2),
    )
    x = torch.randn(2, 2, 8)
    out = torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(out, model(x))


def test_compress_reports_the_layers_it_leaves_dense_and_why():
    net = nn.Sequential(
        nn.Conv2d(4, 4, 1),
        nn.ConvTranspose3d(4, 4, 1),
        nn.Conv1d(4, 4, 1, groups=2),
        nn.Conv2d(4, 4, 1),
    )
    small, report = compress(net, "svd", ranks=2, skip=())
    assert [r.name for r in report.layers] == ["0", "3"]
    assert "layer '1' left dense: ConvTranspose3d is not supported (no compressed layer" in (
        "\n".join(report.notes)
    )
    assert "layer '2' left dense: groups=2 is not supported (only groups=1)" in report.notes
    assert type(small[1]) is nn.ConvTranspose3d and type(small[2]) is nn.Conv1d
    _, named = compress(net, "svd", ranks=2, layers=["0"], skip=())
    assert not any("left dense" in n for n in named.notes)


def test_spectra_of_the_new_kinds_speak_their_own_legs():
    import tensornet as tn

    torch.manual_seed(9)
    one = TNConv1d(4, 6, 3, format="tucker2", ranks=(3, 2), dtype=torch.float64)
    up = TNConvTranspose2d(6, 4, 3, format="tt", ranks=2, dtype=torch.float64)
    table = tn.model_spectra(nn.Sequential(one, up))
    assert table.layers == ["0", "1"]
    assert {"out|in,k", "in|out,k", "k|out,in"} <= set(table.cuts)
    assert "in|out,kh,kw" in table.cuts and not any("__unit" in c for c in table.cuts)
    assert table.get("1", "in|out,kh,kw").left_legs == ("in",)
    dense = torch.linalg.svdvals(one.weight.detach().reshape(6, -1))
    got = torch.as_tensor(table.get("0", "out|in,k").values, dtype=torch.float64)
    torch.testing.assert_close(got[: len(dense)][:3], dense[:3], atol=1e-10, rtol=0)


def test_kind_helpers_on_plain_ints_lists_and_layers_without_groups():
    from tensornet.nn.kinds import _only_ungrouped

    assert _only_ungrouped(nn.Linear(2, 2)) is None  # no groups at all: nothing to refuse
    assert (
        _only_ungrouped(nn.Conv3d(4, 4, 1, groups=4)) == "groups=4 is not supported (only groups=1)"
    )
    assert kind_named("linear").kernel_shape({"in_features": 3, "out_features": 2}) == [2, 3]
    layer = TNConv2d(2, 4, 3, padding=1, stride=2, format="svd", ranks=2)  # ints as given
    args = record_args(layer, kind_named("conv2d"))
    assert args["padding"] == [1, 1] and args["stride"] == [2, 2] and args["kernel_size"] == [3, 3]
    built = kind_named("conv2d").build(
        {**args, "padding": [1, 1]}, format="svd", ranks=2, dtype=torch.float64
    )
    assert type(built) is TNConv2d and built.padding == (1, 1) and built.kernel_size == (3, 3)
    three = kind_named("conv3d").build(
        record_args(nn.Conv3d(2, 3, (1, 2, 3)), kind_named("conv3d")), format="tt", ranks=2
    )
    assert three.kernel_size == (1, 2, 3) and three.padding == (0, 0, 0)
