"""save / load / describe: exact round trips, strict checks before any allocation, atomicity."""

import json
import os
import pickle
import re
import resource
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tensornet.nn import TNConv2d, TNLinear, describe, load, save

F64 = torch.float64


def dense(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
        nn.ReLU(),
        nn.Linear(10, 4),
    ).to(dtype)


def compressed(dtype=torch.float32):
    net = dense(0, dtype)
    net[0] = TNConv2d.from_conv(net[0], "tucker2", ranks=(4, 1))
    net[3] = TNConv2d.from_conv(net[3], "tt", ranks=(3, 3, 4), plan="staged")
    net[6] = TNLinear.from_linear(net[6], "svd", ranks=3, plan="direct")
    net[1].running_mean.uniform_(-1, 1)  # statistics that a fresh model does not have
    net[1].running_var.uniform_(0.5, 2)
    net[1].num_batches_tracked.fill_(7)
    return net.eval()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.safetensors"
    save(compressed(), path, metadata={"note": "x"})
    return path


def read(path):
    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def snapshot(model):
    """Everything a failed load must leave alone: modules, parameter objects, values."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modules = [(n, type(m), id(m), m.training) for n, m in model.named_modules()]
    params = [(n, id(p)) for n, p in model.named_parameters()]
    return state, modules, params


def assert_unchanged(model, snap):
    state, modules, params = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) and now[k].dtype == state[k].dtype for k in now)
    assert [(n, type(m), id(m), m.training) for n, m in model.named_modules()] == modules
    assert [(n, id(p)) for n, p in model.named_parameters()] == params


def test_round_trip_is_exact_and_takes_the_mode_of_the_replaced_module(saved):
    small = compressed()
    fresh = dense(5).train()
    fresh[3].eval()
    assert load(fresh, saved) == {"note": "x"}
    assert [type(fresh[i]) for i in (0, 3, 6, 8)] == [TNConv2d, TNConv2d, TNLinear, nn.Linear]
    assert [fresh[i].training for i in (0, 3, 6)] == [True, False, True]
    sa, sb = fresh.state_dict(), small.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert fresh[3].ranks == (3, 3, 4) and fresh[3].stride == (2, 2) and fresh[3].bias is None
    assert (fresh[0].ranks, fresh[0].plan, fresh[3].plan) == ((4, 1), "auto", "staged")
    assert fresh[6].plan == "direct" and fresh[0].padding == (1, 1)
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(fresh.eval()(x), small(x))
    # the loaded layer equals the dense conv of its kernel, recomputed in float64
    ref = nn.functional.conv2d(x.double(), small[0].weight.double(), small[0].bias.double(), 1, 1)
    torch.testing.assert_close(fresh[0](x).double(), ref, rtol=1e-5, atol=1e-5)
    assert not list(saved.parent.glob(".*.tmp"))


def test_load_into_a_compressed_model_replaces_its_layers(saved):
    target = compressed()
    target[3] = TNConv2d(6, 8, 3, stride=2, bias=False, format="cp", ranks=2, dtype=F64)
    load(target, saved)
    assert target[3].format == "tt" and target[3].factors["G0"].dtype == F64
    torch.testing.assert_close(target[3].weight, compressed()[3].weight.double())


def test_describe_records():
    net = compressed()
    rec = describe(net)
    assert list(rec) == ["0", "3", "6"]
    assert rec["3"] == {
        "kind": "conv2d",
        "in_channels": 6,
        "out_channels": 8,
        "kernel_size": [3, 3],
        "stride": [2, 2],
        "padding": [0, 0],
        "dilation": [1, 1],
        "padding_mode": "zeros",
        "bias": False,
        "groups": 1,
        "structure": net[3].structure.to_dict(),
        "plan": "staged",
    }
    assert rec["6"] == {
        "kind": "linear",
        "in_features": 128,
        "out_features": 10,
        "bias": True,
        "structure": net[6].structure.to_dict(),
        "plan": "direct",
    }
    conv = TNConv2d(3, 3, 3, padding="same", format="cp", ranks=2)
    assert describe(nn.Sequential(conv))["0"]["padding"] == "same"


def tied():
    torch.manual_seed(2)
    lin = TNLinear(6, 6, format="svd", ranks=2)
    block = nn.Sequential(
        TNLinear(6, 6, format="ttmatrix", ranks=2, out_dims=(2, 3), in_dims=(3, 2))
    )
    return nn.Sequential(lin, nn.Tanh(), lin, block, block)


def tied_fresh():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sequential(nn.Linear(6, 6)),
        nn.Sequential(nn.Linear(6, 6)),
    )  # fmt: skip


def test_tied_layers_are_saved_once_and_load_tied(tmp_path):
    net = tied()
    assert describe(net)["2"] == {"same_as": "0"} and describe(net)["4.0"] == {"same_as": "3.0"}
    path = tmp_path / "tied.safetensors"
    save(net, path)
    _, tensors = read(path)
    assert sorted(tensors) == sorted(k for k in net.state_dict() if k[0] in "03")
    fresh = tied_fresh()
    load(fresh, path)
    assert fresh[0] is fresh[2] and fresh[3][0] is fresh[4][0]
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in net.parameters())
    x = torch.randn(4, 6)
    assert torch.equal(fresh(x), net(x))
    # a model whose modules are already tied (shared parents too) loads the same way
    again = tied_fresh()
    again[2], again[4] = again[0], again[3]
    assert load(again, path) == {}
    assert again[0] is again[2] and torch.equal(again(x), net(x))
    # a refused load leaves a model with shared parents as it was (layers are put back in order)
    bad = rewrite(path, tmp_path / "bad.safetensors", tensors=put("extra", torch.ones(1)))
    tied_parents = tied_fresh()
    tied_parents[4] = tied_parents[3]
    snap = snapshot(tied_parents)
    with pytest.raises(ValueError, match="'extra'"):
        load(tied_parents, bad)
    assert_unchanged(tied_parents, snap)


def test_tied_dense_modules_and_same_padding_round_trip(tmp_path):
    torch.manual_seed(4)
    lin = nn.Linear(4, 4)
    conv = TNConv2d(4, 4, 3, padding="same", format="cp", ranks=2)
    net = nn.Sequential(nn.Sequential(conv, nn.Tanh()), nn.Sequential(lin, lin))
    path = tmp_path / "d.safetensors"
    save(net, path, metadata={"where": tmp_path})
    fresh = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same"), nn.Tanh()))
    fresh.append(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    assert load(fresh, path) == {"where": str(tmp_path)}
    assert fresh[0][0].padding == "same" and fresh[0][0].format == "cp"
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(fresh[0](x), net[0](x))
    assert torch.equal(fresh[1][0].weight, lin.weight) and torch.equal(fresh[1][1].bias, lin.bias)


def test_files_without_tensornet_metadata_are_refused(tmp_path):
    save_file(dense().state_dict(), os.fspath(tmp_path / "plain.safetensors"))
    with pytest.raises(
        ValueError, match="no 'tensornet' metadata; not a file written by tensornet"
    ):
        load(dense(), tmp_path / "plain.safetensors")


def rewrite(src, dst, meta=None, tensors=None, top=None):
    """Copy a file, editing its metadata, its tensors or its parsed 'tensornet' JSON."""
    m, t = read(src)
    if top is not None:
        data = json.loads(m["tensornet"])
        top(data)
        m["tensornet"] = json.dumps(data)
    if meta is not None:
        meta(m)
    if tensors is not None:
        tensors(t)
    save_file(t, os.fspath(dst), metadata=m)
    return dst


def put(key, value):
    return lambda t: t.__setitem__(key, value)


def setter(*path, value):
    def edit(data):
        node = data["layers"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def deleter(*path):
    def edit(data):
        node = data["layers"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


LONG = "got " + repr(list(range(1, 40)))[:57] + "..."
BAD_TOP = [
    (setter("6", "in_features", value="128"), "layer '6': field 'in_features' must be a pos"),
    (setter("3", "structure", "ranks", value=[3, 2, 4]), r"'3.factors.G1' has shape \(3, 3, 3\)"),
    (setter("3", "structure", "ranks", value=[3] * 30), "layer '3': bad structure .TT"),
    (setter("3", "kernel_size", value=list(range(1, 40))), re.escape(LONG) + "$"),
    (setter("0", "in_channels", value=3.0), "field 'in_channels' must be a positive int, got 3.0"),
    (setter("6", "out_features", value=0), "field 'out_features' must be a positive int, got 0"),
    (setter("3", "structure", "ranks", value=[3, 3.0, 4]), "'3': structure: field 'ranks' must be"),
    (setter("3", "structure", "ranks", value=[3, 0, 4]), "field 'ranks' must be a list of pos"),
    (setter("3", "structure", "ranks", value="3"), "field 'ranks' must be a list of pos"),
    (setter("3", "structure", "format", value=3), "field 'format' must be a non-empty string"),
    (setter("3", "structure", "format", value="nope"), "bad structure .unknown format 'nope'"),
    (setter("3", "structure", "options", value=[]), "field 'options' must be a JSON object"),
    (setter("3", "structure", "options", value={"order": 3}), "layer '3': bad structure"),
    (setter("3", "structure", "legs", value=["o", "i", "h", "w"]), "do not match the layer"),
    (setter("3", "structure", "shape", value=[8, 6, 3, 1]), "do not match the layer"),
    (deleter("3", "structure", "options"), r"'structure' lacks the field\(s\) \['options'\]"),
    (setter("3", "structure", value=[1]), r"'structure' must be a JSON object, got \[1\]$"),
    (setter("6", "structure", "ranks", value=[1.5]), "layer '6': structure: field 'ranks' must"),
    (setter("3", "padding_mode", value="m" * 58), "got '" + "m" * 58 + "'$"),
    (setter("3", "padding_mode", value="m" * 59), "got '" + "m" * 56 + r"\.\.\.$"),
    (setter("3", "kernel_size", value=[3]), "field 'kernel_size' must be a list of 2 positive"),
    (setter("3", "kernel_size", value=3), "field 'kernel_size' must be a list of 2 positive"),
    (setter("3", "kernel_size", value=[3, 1]), r"'kernel_size' is \[3, 1\] but the model's Conv2d"),
    (setter("3", "stride", value=[0, 2]), "field 'stride' must be a list of 2 positive"),
    (setter("3", "stride", value=[True, 2]), "field 'stride' must be a list of 2 positive"),
    (setter("3", "stride", value=[1, 1]), "field 'stride' is"),
    (setter("3", "dilation", value=[1, "1"]), "field 'dilation' must be a list of 2 positive"),
    (setter("3", "padding", value="full"), "field 'padding' must be 'same', 'valid' or a list"),
    (setter("3", "padding", value=[-1, 0]), "field 'padding' must be 'same', 'valid' or a list"),
    (setter("3", "padding", value="valid"), "field 'padding' is 'valid' but"),
    (
        setter("3", "padding_mode", value="mirror"),
        r"\['zeros', 'reflect', 'replicate', 'circular'\]",
    ),
    (setter("3", "padding_mode", value="reflect"), "field 'padding_mode' is 'reflect'"),
    (setter("3", "bias", value=0), "field 'bias' must be true or false"),
    (setter("3", "bias", value=True), "field 'bias' is True but the model's Conv2d has False"),
    (setter("0", "in_channels", value=4), "field 'in_channels' is 4 but the model's Conv2d has 3"),
    (setter("0", "out_channels", value=True), "field 'out_channels' must be a positive int"),
    (setter("6", "out_features", value=11), "field 'out_features' is 11 but"),
    (setter("0", "plan", value=""), "field 'plan' must be a non-empty string"),
    (setter("0", "plan", value=None), "field 'plan' must be a non-empty string"),
    (
        setter("0", "kind", value="conv4d"),
        r"one of \['linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose2d'\], got 'conv4d'$",
    ),
    (setter("0", "kind", value=["conv2d"]), "field 'kind' must be one of"),
    (deleter("0", "plan"), r"layer '0' lacks the field\(s\) \['plan'\]"),
    (
        setter("0", "extra", value=1),
        r"layer '0' has unknown field\(s\) \['extra'\]; expected \['kind'",
    ),
    (setter("0", value="conv"), "layer '0' must be a JSON object, got 'conv'"),
    (setter("9", value={}), "the model has no module '9'"),
    (setter("", value={}), "the empty name"),
    (setter("8", value={"same_as": "7"}), r"field 'same_as' must name a layer with a full record"),
    (setter("8", value={"same_as": 6}), r"field 'same_as' must name a layer with a full record"),
    (
        setter("8", value={"same_as": ["6"]}),
        r"field 'same_as' must name a layer with a full record, got \['6'\]$",
    ),
    (lambda d: d["layers"].update({"8": {"same_as": "6"}, "7": {"same_as": "8"}}), "layer '7': fi"),
    (setter("8", value={"same_as": "6", "x": 1}), r"layer '8' has unknown field\(s\) \['x'\]"),
    (setter("8", value={"same_as": "6"}), "layer '8': field 'in_features' is 128 but"),
    (
        lambda d: d.update(version=2),
        r"'version' must be 1 .this tensornet reads version 1., got 2$",
    ),
    (lambda d: d.update(version=True), "field 'version' must be 1"),
    (lambda d: d.update(version="1"), "field 'version' must be 1"),
    (lambda d: d.update(layers=[]), "field 'layers' must be a JSON object, got \\[\\]"),
    (lambda d: d.update(extra=1), r"metadata 'tensornet' has unknown field\(s\) \['extra'\]"),
    (lambda d: d.pop("version"), r"metadata 'tensornet' lacks the field\(s\) \['version'\]"),
]


def set_meta(key, value):
    return lambda m: m.__setitem__(key, value)


BAD_META = [
    (set_meta("user", "[1, 2]"), r"metadata 'user' must be a JSON object, got \[1, 2\]"),
    (set_meta("user", "{"), "metadata 'user' is not valid JSON"),
    (set_meta("tensornet", "{"), "metadata 'tensornet' is not valid JSON"),
    (set_meta("tensornet", "[]"), "metadata 'tensornet' must be a JSON object, got"),
    (set_meta("tensornet", '{"version": 1, "version": 1, "layers": {}}'), "'version' appears twi"),
    (
        set_meta("other", "1"),
        r"unknown metadata field\(s\) \['other'\]; expected \['tensornet', 'user'\]",
    ),
    (lambda m: m.pop("tensornet"), "no 'tensornet' metadata; not a file written by"),
]


BAD_TENSORS = [
    (put("1.num_batches_tracked", torch.tensor(7.0)), "'1.num_batches_tracked' is torch.float32"),
    (put("3.factors.G1", torch.ones(3, 3, 3, dtype=torch.int32)), "only floating-point tensors"),
    (put("6.bias", torch.ones(10, dtype=torch.uint16)), "'6.bias' has the unsupported dtype U16"),
    (lambda t: t.pop("6.bias"), r"the file lacks the tensor\(s\) '6.bias'"),
    (put("extra", torch.ones(1)), "the file has tensor.s. the model does not: 'extra'"),
    (lambda t: t.update({f"x{i}": torch.ones(1) for i in range(7)}), "'x4' and 2 more"),
    (lambda t: t.update({f"y{i}": torch.ones(1) for i in range(5)}), "'y3', 'y4'$"),
    (lambda t: t.update({f"z{i}": torch.ones(1) for i in range(6)}), "'z4' and 1 more$"),
    (put("8.weight", torch.ones(4, 11)), r"'8.weight' has shape \(4, 11\) in the file but the mo"),
]


@pytest.mark.parametrize(
    "edit, match",
    [({"top": e}, m) for e, m in BAD_TOP]
    + [({"meta": e}, m) for e, m in BAD_META]
    + [({"tensors": e}, m) for e, m in BAD_TENSORS],
)
def test_a_failed_load_leaves_the_model_unchanged(saved, tmp_path, edit, match):
    bad = rewrite(saved, tmp_path / "bad.safetensors", **edit)
    fresh = dense(4)
    fresh[3].eval()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=match) as err:
        load(fresh, bad)
    assert str(err.value).startswith(f"load({os.fspath(bad)!r}): ")
    assert_unchanged(fresh, snap)


def test_records_are_checked_against_the_model(saved, tmp_path):
    wrong = dense(4)
    wrong[6] = nn.Conv2d(128, 10, 1)
    with pytest.raises(
        ValueError, match="'6': the record is a linear layer but the model has a Conv2d"
    ):
        load(wrong, saved)
    grouped = dense(4)
    grouped[3] = nn.Conv2d(6, 8, 3, stride=2, bias=False, groups=2)
    with pytest.raises(ValueError, match="layer '3': field 'groups' is 1 but the model's Conv2d"):
        load(grouped, saved)
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3)))
    inside = rewrite(
        saved, tmp_path / "n.safetensors", top=lambda d: d.update(layers={"0": 1, "0.0": 2})
    )
    with pytest.raises(ValueError, match="layer '0.0' lies inside layer '0'"):
        load(nested, inside)


def test_a_layer_its_constructor_refuses_is_named(saved, monkeypatch):
    import tensornet.nn.layers as layers

    def refuse(plan, names, what):
        raise ValueError(f"plan {plan!r} is unknown")

    monkeypatch.setattr(layers, "_plan_choices", refuse)
    fresh = dense(4)
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match="net.safetensors'.: layer '0': plan 'auto' is unknown$"):
        load(fresh, saved)
    assert_unchanged(fresh, snap)


@pytest.mark.gpu
def test_layers_land_on_the_device_of_the_module_they_replace(saved):
    fresh = dense(4).cuda()
    load(fresh, saved)
    assert {t.device.type for t in fresh.state_dict().values()} == {"cuda"}
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(fresh.eval()(x.cuda()).cpu(), compressed()(x), rtol=1e-4, atol=1e-5)


def test_a_failure_while_loading_the_values_is_rolled_back(tmp_path):
    class Fragile(nn.Linear):
        fail = False

        def _load_from_state_dict(self, *args, **kwargs):
            super()._load_from_state_dict(*args, **kwargs)  # copies, then fails
            if self.fail:
                raise RuntimeError("disk on fire")

    net = compressed()
    net[8] = Fragile(10, 4)
    save(net, tmp_path / "f.safetensors")
    fresh = dense(4)
    fresh[8] = Fragile(10, 4)
    fresh[8].fail = True
    snap = snapshot(fresh)
    with pytest.raises(RuntimeError, match="disk on fire"):
        load(fresh, tmp_path / "f.safetensors")
    assert_unchanged(fresh, snap)


def test_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (os.fspath(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    for p in (path, tmp_path / "plain.pt"):
        with pytest.raises(ValueError, match=r"^load\(.*\): not a safetensors file \("):
            load(dense(), p)
    assert not marker.exists()


def test_float32_file_into_float64_model_and_back_is_exact(saved, tmp_path):
    small = compressed()
    wide = dense(6, F64)
    load(wide, saved)
    state, ref = wide.state_dict(), small.state_dict()
    for k, v in state.items():
        want = F64 if ref[k].is_floating_point() else torch.int64
        assert v.dtype == want and torch.equal(v, ref[k].to(want)), k
    x = torch.randn(2, 3, 9, 9, dtype=F64)
    torch.testing.assert_close(wide.eval()(x), small.double()(x), rtol=1e-12, atol=1e-12)
    save(wide, tmp_path / "wide.safetensors")
    back = dense(7)
    load(back, tmp_path / "wide.safetensors")
    sa, sb = back.state_dict(), compressed().state_dict()
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sb)


def test_save_refuses_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="metadata must be a dict or None, got list"):
        save(compressed(), tmp_path / "a.safetensors", metadata=[1])
    with pytest.raises(
        ValueError, match="^save: the model is itself a compressed layer; wrap it in nn.Sequential$"
    ):
        save(TNLinear(4, 4, format="svd", ranks=1), tmp_path / "a.safetensors")
    assert not list(tmp_path.iterdir())


def vm_size():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def guarded(fn, headroom=300 * 2**20):
    """Run ``fn`` in a forked child whose address space is capped ``headroom`` above now.

    Returns the child's exit code: 0 if ``fn`` returned, 3 if the guard did not work, 4 if ``fn``
    raised (the message goes to stderr). A regression that allocates fails instead of eating the
    machine's memory.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 4
        try:
            limit = vm_size() + headroom
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                torch.empty(2**30)  # 4 GB: the guard must refuse it
                code = 3
            except (RuntimeError, MemoryError):
                fn()
                code = 0
        except BaseException as err:
            sys.stderr.write(f"{type(err).__name__}: {err}\n")
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_huge_ranks_are_refused_before_any_allocation(saved, tmp_path):
    big = [2**15, 2**15, 2**15]  # G1 would be 2**15 * 3 * 2**15 floats: 12 GB, G2 as much
    edit = setter("3", "structure", "ranks", value=big)
    bad = rewrite(saved, tmp_path / "big.safetensors", top=edit)
    model = dense(4)

    def refused():
        with pytest.raises(ValueError, match=r"'3.factors.G0' has shape \(6, 3\) in the file"):
            load(model, bad)

    assert guarded(refused) == 0
    refused()  # in this process too, now that it is known to be safe: mutation tools see the call
    assert guarded(lambda: torch.ones(2**28)) == 4  # 1 GB: the guard catches an allocation
