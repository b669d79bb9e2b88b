"""recalibrate_bn: BatchNorm running statistics recomputed from data (against float64 statistics
of what each layer sees), nothing else changed, modes/momentum/RNG restored, errors atomic; and
compress(calibrate=...) on a trained ResNet-20 lifts one-shot accuracy."""

import copy
import itertools
import os
import re
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import tensornet.nn as tnn
from tensornet.nn import BNRecalibration, batchnorm_layers, compress, recalibrate_bn
from tensornet.nn.batchnorm import _progress

F64 = torch.float64

# the warning points at the caller; under mutmut a trampoline frame sits in between
UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"


class Probe(nn.Module):
    """Identity that records its training flag at every forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def nested_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),  # 0
        nn.BatchNorm2d(6, momentum=0.3),  # 1
        nn.ReLU(),  # 2
        nn.Dropout(0.5),  # 3: eval, must stay off
        nn.Conv2d(6, 8, 3, stride=2),  # 4
        nn.BatchNorm2d(8, affine=False, momentum=None),  # 5
        nn.ReLU(),  # 6
        nn.Flatten(),  # 7
        nn.Linear(8 * 3 * 3, 12),  # 8
        nn.BatchNorm1d(12),  # 9
        nn.BatchNorm1d(12, track_running_stats=False),  # 10
        Probe(),  # 11
        nn.Linear(12, 4),  # 12
    )


BN_NAMES = ("1", "5", "9")


def make_stale(net):
    """Deliberately wrong statistics and counts, different per layer."""
    with torch.no_grad():
        for i, name in enumerate(BN_NAMES):
            bn = net.get_submodule(name)
            bn.running_mean.fill_(5.0 + i)
            bn.running_var.fill_(9.0 + i)
            bn.num_batches_tracked.fill_(123 + i)
    return net


def reference_stats(net, batches):
    """Float64 statistics of the inputs each tracked BN sees, with BNs normalising by batch
    statistics and every other module as it is (a float64 copy, inputs concatenated)."""
    ref = copy.deepcopy(net).double()
    seen = {name: [] for name in BN_NAMES}
    hooks = []
    for name in BN_NAMES:
        bn = ref.get_submodule(name)
        bn.train()
        bn.momentum = 0.0
        hooks.append(bn.register_forward_pre_hook(lambda m, a, n=name: seen[n].append(a[0])))
    with torch.no_grad():
        for x in batches:
            ref(x.double())
    out = {}
    for name, xs in seen.items():
        x = torch.cat(xs)
        dims = [0] + list(range(2, x.dim()))
        out[name] = (x.mean(dim=dims), x.var(dim=dims, unbiased=True))
    return out


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_only_stats_changed(net, before, names=BN_NAMES):
    after = net.state_dict()
    assert after.keys() == before.keys()
    stats = {f"{n}.{b}" for n in names for b in ("running_mean", "running_var")}
    stats |= {f"{n}.num_batches_tracked" for n in names}
    for k in after:
        if k not in stats:
            assert torch.equal(after[k], before[k]), k


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(70, 3, 7, 7, generator=g) + 0.5
    y = torch.randint(0, 4, (70,), generator=g)
    return x, y


def test_stale_statistics_recomputed_from_a_dataloader_of_pairs(xy):
    x, y = xy
    net = make_stale(nested_net()).eval()
    net[11].train()  # another module in training mode stays so
    before, rng = snapshot(net), torch.get_rng_state()
    order = torch.randperm(70, generator=torch.Generator().manual_seed(7))
    loader = DataLoader(TensorDataset(x[order], y[order]), batch_size=20)  # 20, 20, 20, 10
    result = recalibrate_bn(net, loader, progress=False)
    assert result == BNRecalibration(BN_NAMES, 4, 70)
    ref = reference_stats(net, [x[order][i : i + 20] for i in range(0, 70, 20)])
    for name in BN_NAMES:
        bn = net.get_submodule(name)
        mean, var = ref[name]
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-5)
        assert int(bn.num_batches_tracked) == 4
        assert not bn.training
    assert_only_stats_changed(net, before)
    # momentum and modes restored; the probe ran in its own (training) mode; no hook left
    assert (net[1].momentum, net[5].momentum, net[9].momentum) == (0.3, None, 0.1)
    assert [m.training for m in net] == [False] * 11 + [True, False]
    assert net[11].seen == [True] * 4
    assert all(not m._forward_pre_hooks for m in net.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    # the first layer's statistics by hand: its input is the conv's output, over all 70 images
    c = F.conv2d(x.double(), net[0].weight.double(), net[0].bias.double(), padding=1)
    torch.testing.assert_close(net[1].running_mean.double(), c.mean(dim=(0, 2, 3)), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    v = c.transpose(0, 1).reshape(6, -1).var(dim=1, unbiased=True)
    torch.testing.assert_close(net[1].running_var.double(), v, rtol=1e-5, atol=1e-6)


def test_pooled_statistics_do_not_depend_on_batching(xy):
    """All values at once: a short last batch counts by its size (not as a whole batch)."""
    x, _ = xy
    net = nested_net()[:3].eval()
    recalibrate_bn(net, [x[:64], x[64:]], progress=False)
    one = nested_net()[:3].eval()
    recalibrate_bn(one, x, progress=False)  # a tensor is one batch
    torch.testing.assert_close(net[1].running_mean, one[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, one[1].running_var, rtol=1e-5, atol=1e-6)
    assert int(one[1].num_batches_tracked) == 1 and int(net[1].num_batches_tracked) == 2


def test_batches_limits_the_data(xy):
    x, y = xy
    net = make_stale(nested_net()).eval()
    pairs = ([x[i : i + 16], y[i : i + 16]] for i in itertools.count(0, 16))  # endless, lists
    result = recalibrate_bn(net, pairs, batches=np.int64(2), progress=True)
    assert (result.batches, result.samples) == (2, 32)
    ref = reference_stats(net, [x[:16], x[16:32]])
    for name in BN_NAMES:
        torch.testing.assert_close(
            net.get_submodule(name).running_var.double(), ref[name][1], rtol=1e-5, atol=1e-5
        )
    # more batches than the data holds: all of it
    assert recalibrate_bn(net, [x[:30], x[30:]], batches=5, progress=False).batches == 2


def test_model_dtype_and_device_and_integer_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)).double()
    x = torch.randn(10, 2, 3, 3)  # float32 into a float64 model
    recalibrate_bn(net, [x], progress=False)
    c = net[0](x.double())
    torch.testing.assert_close(net[1].running_mean, c.mean(dim=(0, 2, 3)))
    # integer inputs are not cast (an embedding's indices)
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.BatchNorm1d(12))
    idx = torch.randint(0, 10, (16, 3))
    recalibrate_bn(emb, [idx], progress=False)
    e = emb[0](idx).reshape(16, 12).double()
    torch.testing.assert_close(emb[2].running_mean.double(), e.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb[2].running_var.double(), e.var(0), rtol=1e-5, atol=1e-6)


def test_a_model_with_only_buffers_runs_on_cpu():
    """No parameters (affine=False): the placement comes from the buffers."""
    net = nn.Sequential(nn.BatchNorm1d(3, affine=False)).double()
    x = torch.randn(8, 3)
    recalibrate_bn(net, [x], progress=False)
    torch.testing.assert_close(net[0].running_mean, x.double().mean(0))
    assert net[0].running_mean.dtype == F64


def test_batchnorm_layers_lists_only_tracked_batchnorms():
    class MyNorm(nn.BatchNorm2d):
        pass

    net = nn.Sequential(
        nn.BatchNorm1d(2),
        nn.BatchNorm2d(2, track_running_stats=False),
        nn.BatchNorm3d(2, affine=False),
        nn.SyncBatchNorm(2),
        nn.LayerNorm(2),
        nn.InstanceNorm2d(2, track_running_stats=True),  # not a BatchNorm
        MyNorm(2),
        nn.LazyBatchNorm1d(),
        nn.LazyBatchNorm2d(),
        nn.LazyBatchNorm3d(),
    )
    assert list(batchnorm_layers(net)) == ["0", "2", "3", "6", "7", "8", "9"]


def test_lazy_batchnorm_must_be_initialised(xy):
    x, _ = xy
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LazyBatchNorm2d())
    lazy = "recalibrate_bn: lazy BatchNorm layers ['1'] are not initialised; run the model once"
    with pytest.raises(ValueError, match="^" + re.escape(lazy) + "$"):
        recalibrate_bn(net, [x], progress=False)
    net(x[:2])  # now a BatchNorm2d
    recalibrate_bn(net, [x], progress=False)
    torch.testing.assert_close(net[1].running_mean, net[0](x).mean(dim=(0, 2, 3)))


def test_no_batchnorm_warns_and_runs_nothing():
    def never():
        raise AssertionError("data must not be read")
        yield

    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    message = (
        "recalibrate_bn: the model has no BatchNorm layer with running statistics; "
        "nothing to recompute"
    )
    with pytest.warns(UserWarning, match="^" + re.escape(message) + "$") as rec:
        assert recalibrate_bn(net, never()) == BNRecalibration((), 0, 0)
    assert rec[0].filename == __file__ or UNDER_MUTMUT  # mutmut adds a trampoline frame


def test_both_warnings_point_at_the_callers_line(xy, monkeypatch):
    """The stacklevel of each warning names the caller of recalibrate_bn (checked on the frame
    it names, mutmut's trampoline frames not counted, so that this holds under mutmut too)."""
    import tensornet.nn.batchnorm as batchnorm

    seen = []

    def warn(message, category=None, stacklevel=1):
        frame, left = sys._getframe(1), stacklevel - 1
        while left:
            frame = frame.f_back
            left -= f"{os.sep}mutmut{os.sep}" not in frame.f_code.co_filename
        seen.append((message, category or UserWarning, frame))

    monkeypatch.setattr(batchnorm, "warnings", types.SimpleNamespace(warn=warn))
    x, _ = xy
    here = sys._getframe()

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.used(x)

    recalibrate_bn(nn.Linear(3, 3), [x], progress=False)
    recalibrate_bn(TwoHeads(), [x], progress=False)
    assert [m[:2] for m in seen] == [
        (
            "recalibrate_bn: the model has no BatchNorm layer with running statistics; "
            "nothing to recompute",
            UserWarning,
        ),
        ("recalibrate_bn: BatchNorm layers ['unused'] saw no input; their statistics are kept",
         UserWarning),
    ]  # fmt: skip
    assert [m[2] for m in seen] == [here, here]


def test_a_layer_no_batch_reaches_keeps_its_statistics(xy):
    x, _ = xy

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.used(x)

    net = TwoHeads().eval()
    with torch.no_grad():
        net.unused.running_mean.fill_(3.0)
        net.unused.num_batches_tracked.fill_(9)
    message = "recalibrate_bn: BatchNorm layers ['unused'] saw no input; their statistics are kept"
    with pytest.warns(UserWarning, match="^" + re.escape(message) + "$") as rec:
        result = recalibrate_bn(net, [x], progress=False)
    assert rec[0].filename == __file__ or UNDER_MUTMUT  # mutmut adds a trampoline frame
    assert result.layers == ("used",)
    assert torch.equal(net.unused.running_mean, torch.full((3,), 3.0))
    assert torch.equal(net.unused.running_var, torch.ones(3))
    assert int(net.unused.num_batches_tracked) == 9
    torch.testing.assert_close(net.used.running_mean, x.mean(dim=(0, 2, 3)))


def test_empty_batches_add_nothing_and_1d_input_is_refused_by_the_layer(xy):
    x, _ = xy
    net = nn.BatchNorm2d(3)
    result = recalibrate_bn(net, [x[:0], x], progress=False)  # BatchNorm accepts N = 0
    assert (result.batches, result.samples) == (2, 70)
    torch.testing.assert_close(net.running_mean, x.mean(dim=(0, 2, 3)))
    assert int(net.num_batches_tracked) == 2
    flat = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        recalibrate_bn(flat, [torch.randn(3)], progress=False)
    assert torch.equal(flat.running_mean, torch.zeros(3))


def expect_unchanged(net, before, call, error, match):
    modes = [m.training for m in net.modules()]
    with pytest.raises(error, match=match):
        call()
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [m.training for m in net.modules()] == modes
    assert (net[1].momentum, net[5].momentum) == (0.3, None)
    assert all(not m._forward_pre_hooks for m in net.modules())


def test_errors_leave_the_model_as_it_was(xy):
    x, _ = xy
    net = make_stale(nested_net()).eval()
    before = snapshot(net)
    bad = x[:10, :2]  # two channels into a 3-channel conv
    pair = "each batch must be a tensor or an (input, target) pair with a tensor input; "
    integer = "batches must be a positive integer, got "
    least = "batches must be at least 1, got "
    cases = [
        (lambda: recalibrate_bn(net, []), ValueError, "data yielded no batches"),
        (lambda: recalibrate_bn(net, 3), TypeError,
         "data must be a tensor or an iterable of batches, got int"),
        (lambda: recalibrate_bn(net, [x[:10], "images"]), TypeError, pair + "batch 1 gives str"),
        (lambda: recalibrate_bn(net, [x[:10], {"x": x}]), TypeError, pair + "batch 1 gives dict"),
        (lambda: recalibrate_bn(net, [(x[:10],), ()]), TypeError, "batch 1 is an empty tuple"),
        (lambda: recalibrate_bn(net, [[None, x]]), TypeError, pair + "batch 0 gives NoneType"),
        (lambda: recalibrate_bn(net, [x, torch.tensor(1.0)]), TypeError,
         "batch 1 is a 0-d tensor; batches have a batch dimension"),
        (lambda: recalibrate_bn(net, [x], batches=0), ValueError, least + "0"),
        (lambda: recalibrate_bn(net, [x], batches=-2), ValueError, least + "-2"),
        (lambda: recalibrate_bn(net, [x], batches=1.5), TypeError, integer + "1.5"),
        (lambda: recalibrate_bn(net, [x], batches=True), TypeError, integer + "True"),
    ]  # fmt: skip
    for call, error, message in cases:
        expect_unchanged(
            net, before, call, error, "^" + re.escape("recalibrate_bn: " + message) + "$"
        )
    expect_unchanged(
        net, before, lambda: recalibrate_bn(net, [x[:10], bad]), RuntimeError, "to have 3 channels"
    )


def test_progress_bar():
    data = [1, 2, 3]
    assert _progress(data, None, False) is None and _progress(data, 2, False) is None
    assert _progress(data, None, True).total == 3
    assert _progress(data, 2, True).total == 2
    assert _progress(data, 5, True).total == 3
    assert _progress(iter(data), 4, True).total == 4
    assert _progress(iter(data), None, True).total is None
    bar = _progress(data, None, True)
    assert list(bar) == data
    assert (bar.desc, bar.unit, bar.delay, bar.leave) == ("recalibrate_bn", "batch", 2.0, False)


def test_num_batches_tracked_none_and_a_one_batch_limit(xy):
    x, _ = xy
    net = nn.Sequential(nn.BatchNorm2d(3))
    net[0].register_buffer("num_batches_tracked", None)
    recalibrate_bn(net, [x[:30], x[30:]], progress=False)
    torch.testing.assert_close(net[0].running_var, x.var(dim=(0, 2, 3)))
    assert net[0].num_batches_tracked is None
    assert recalibrate_bn(net, [x[:5], x[5:]], batches=1, progress=False).batches == 1
    torch.testing.assert_close(net[0].running_var, x[:5].var(dim=(0, 2, 3)))


def test_batches_with_different_means_pool_into_the_variance_of_all_values(xy):
    """The between-batch spread counts: var(all) = mean of within + spread of the means."""
    x, _ = xy
    net = nn.BatchNorm2d(3)
    parts = [x[:30] + 5.0, x[30:37] - 3.0, 2.0 * x[37:]]
    recalibrate_bn(net, parts, progress=False)
    allx = torch.cat(parts).double()
    torch.testing.assert_close(
        net.running_mean.double(), allx.mean(dim=(0, 2, 3)), rtol=1e-6, atol=1e-6
    )
    torch.testing.assert_close(
        net.running_var.double(), allx.var(dim=(0, 2, 3)), rtol=1e-6, atol=1e-6
    )


def test_compress_calibrate_runs_recalibration(xy):
    x, y = xy
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 49, 4),
    ).eval()  # fmt: skip
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    small, report = compress(net, "tucker2", fraction=0.3, calibrate=loader)
    plain, plain_report = compress(net, "tucker2", fraction=0.3)
    assert not plain_report.notes
    assert report.notes == [
        "BatchNorm statistics recomputed for 3 layers from 70 samples (3 batches)"
    ]
    assert str(report).endswith(report.notes[0])
    # the dense model is untouched; the compressed one equals compress + recalibrate_bn
    assert int(net[4].num_batches_tracked) == 0 and torch.equal(net[4].running_var, torch.ones(16))
    recalibrate_bn(plain, loader, progress=False)
    for a, b in zip(small.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not small.training


@pytest.fixture(scope="module")
def trained_resnet20():
    from models import build_model
    from studies.common.data import load_digits
    from studies.common.training import train

    data = load_digits(seed=0)
    torch.manual_seed(0)
    net = build_model("resnet20", 1, 10, 8)
    train(net, data, epochs=3, progress=False)
    return net.eval(), data


def test_recalibration_lifts_one_shot_accuracy_of_a_trained_resnet20(trained_resnet20):
    from studies.common.training import evaluate

    net, data = trained_resnet20
    dense = evaluate(net, data.test)
    alloc = tnn.allocate(net, 0.6, method="alds")
    images = data.train.tensors[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a model whose BNs all see data
        small, _ = compress(net, allocation=alloc)
        fixed, report = compress(net, allocation=alloc, calibrate=DataLoader(data.train, 256))
    before, after = evaluate(small, data.test), evaluate(fixed, data.test)
    assert dense > 0.85
    assert before < 0.3  # stale dense statistics: near chance
    assert after > before + 0.3, (dense, before, after)
    assert f"from {len(images):,} samples" in report.notes[0]


def test_inputs_go_to_the_model_device_and_the_random_state_is_kept(device, xy):
    """CPU batches into a model on ``device``; dropout in a training-mode model draws random
    numbers, yet neither the CPU nor the device's generator moves."""
    x, _ = xy
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4)).to(device).train()
    cpu = torch.get_rng_state()
    gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    recalibrate_bn(net, [x[:35], x[35:]], progress=False)
    assert torch.equal(torch.get_rng_state(), cpu)
    if gpu is not None:
        assert torch.equal(torch.cuda.get_rng_state(device), gpu)
    assert net[2].running_mean.device.type == device.type
    # dropout zeroes half the values and doubles the rest: the mean stays about the same
    c = net[0](x.to(device)).double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(net[2].running_mean.double(), c, rtol=0.2, atol=0.05)
    assert net.training and net[1].training


def test_integer_inputs_go_to_the_model_device(device):
    """Integer batches (token ids) move to the model's device without a dtype cast."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 4), nn.BatchNorm1d(4)).to(device).eval()
    ids = torch.randint(0, 10, (40,))
    result = recalibrate_bn(net, [ids[:25], ids[25:]], progress=False)
    assert (result.batches, result.samples) == (2, 40)
    rows = net[0].weight.detach().cpu().double()[ids]
    torch.testing.assert_close(net[1].running_mean.cpu().double(), rows.mean(dim=0))
    torch.testing.assert_close(net[1].running_var.cpu().double(), rows.var(dim=0))


def test_the_batches_run_through_the_progress_bar(xy, monkeypatch):
    """By default a bar is asked for, with the batch limit, and the batches come through it."""
    import tensornet.nn.batchnorm as batchnorm

    class Bar:
        def __init__(self, data):
            self.data, self.seen, self.closed = data, 0, False

        def __iter__(self):
            for item in self.data:
                self.seen += 1
                yield item

        def close(self):
            self.closed = True

    calls, bars = [], []

    def spy(data, limit, enabled):
        calls.append((limit, enabled))
        bars.append(Bar(data))
        return bars[-1]

    monkeypatch.setattr(batchnorm, "_progress", spy)
    x, _ = xy
    net = make_stale(nested_net()).eval()
    result = recalibrate_bn(net, [x[:16], x[16:32], x[32:48]], batches=2)
    assert calls == [(2, True)] and result.batches == 2
    assert bars[0].seen == 2 and bars[0].closed
