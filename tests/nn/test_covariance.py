"""A layer's input rows and their covariances (tensornet.nn.covariance): the rows times the
kernel are the layer, covariances are the Gram matrices of every row over all batches (also
paired with a partly compressed model's rows), and layers fitted in turn."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tensornet.nn import covariance
from tensornet.nn.covariance import (
    InputCovariance,
    fit_sequentially,
    has_rows,
    input_covariances,
    layer_rows,
)

F64 = torch.float64


# -- the rows a layer multiplies ----------------------------------------------------------------
CONVS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=2, padding="same"),  # asymmetric padding
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 2), padding_mode="circular", stride=2),
    dict(kernel_size=3, padding=1, padding_mode="replicate"),
]


@pytest.mark.parametrize("kw", CONVS)
def test_conv_rows_times_the_kernel_are_the_conv(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, bias=False, dtype=F64, **kw)
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    rows = layer_rows(conv, x)
    y = conv(x)
    assert rows.shape == (y.shape[0] * y.shape[2] * y.shape[3], 3 * math.prod(conv.kernel_size))
    out = (rows @ conv.weight.reshape(4, -1).T).reshape(2, -1, 4).transpose(1, 2)
    torch.testing.assert_close(out.reshape(y.shape), y)
    unbatched = layer_rows(conv, x[0])
    torch.testing.assert_close(unbatched, rows[: len(unbatched)])


def test_linear_rows_flatten_leading_dimensions_and_other_layers_are_refused():
    lin = nn.Linear(5, 2)
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(layer_rows(lin, x), x.reshape(6, 5))
    for bad in (nn.Conv2d(4, 4, 3, groups=2), nn.Conv1d(2, 2, 3), nn.ReLU()):
        with pytest.raises(TypeError, match="layer_rows: expected"):
            layer_rows(bad, torch.randn(1, 4, 5, 5))


# -- input covariances ------------------------------------------------------------------------
def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect"),  # 0
        nn.BatchNorm2d(6),  # 1
        nn.ReLU(),  # 2
        nn.Dropout(0.5),  # 3
        nn.Conv2d(6, 5, 3, stride=2, dilation=2),  # 4
        nn.Flatten(),  # 5
        nn.Linear(5 * 3 * 3, 7),  # 6
    ).double()


def reference_rows(net, x, names=("0", "4", "6")):
    """Each layer's rows, gathered by hooks on an eval-mode copy."""
    ref = copy.deepcopy(net).eval()
    seen = {}
    for name in names:
        module = ref.get_submodule(name)
        module.register_forward_pre_hook(
            lambda m, a, name=name: seen.setdefault(name, []).append(layer_rows(m, a[0]))
        )
    with torch.no_grad():
        ref(x)
    return {n: torch.cat(v) for n, v in seen.items()}


def test_covariances_are_the_gram_of_every_row_over_all_batches_in_eval_mode():
    net = small_net().train()
    x = torch.randn(10, 3, 9, 9, dtype=F64)
    batches = DataLoader(TensorDataset(x, torch.zeros(10)), batch_size=4)  # 4 + 4 + 2
    covs = input_covariances(net, batches)
    rows = reference_rows(net, x)
    assert list(covs) == ["0", "4", "6"]
    for name, r in rows.items():
        assert covs[name].rows == r.shape[0]
        assert covs[name].features == r.shape[1]
        assert covs[name].matrix.dtype == F64
        torch.testing.assert_close(covs[name].matrix, r.T @ r)
        torch.testing.assert_close(covs[name].second_moment, r.T @ r / r.shape[0])
    assert all(m.training for m in net.modules())  # modes restored
    assert covs["0"].rows == 10 * 81 and covs["6"].rows == 10


def test_covariances_take_a_tensor_batches_limits_layers_and_float_inputs():
    net = small_net()
    x = torch.randn(6, 3, 9, 9, dtype=F64)
    one = input_covariances(net, x, "4")
    assert list(one) == ["4"]
    torch.testing.assert_close(one["4"].matrix, input_covariances(net, [x], ["4"])["4"].matrix)
    first = input_covariances(net, [x[:2], x[2:]], ["6"], batches=1)["6"]
    r = reference_rows(net, x[:2])["6"]
    assert first.rows == 2
    torch.testing.assert_close(first.matrix, r.T @ r)
    # float32 batches go to the model's dtype
    as32 = input_covariances(net, [(x.float(), None)], ["6"])["6"]
    rounded = input_covariances(net, x.float().double(), ["6"])["6"]
    torch.testing.assert_close(as32.matrix, rounded.matrix)


def test_a_layer_called_twice_adds_both_inputs_and_an_unreached_layer_is_left_out():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.unused = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()

        def forward(self, x):
            return self.lin(self.lin(x))

    net = Twice()
    x = torch.randn(4, 3, dtype=F64)
    covs = input_covariances(net, x)
    h = net.lin(x).detach()
    assert list(covs) == ["lin"] and covs["lin"].rows == 8
    torch.testing.assert_close(covs["lin"].matrix, x.T @ x + h.T @ h)


def test_covariances_are_chunked_over_large_batches(monkeypatch):
    monkeypatch.setattr(covariance, "_CHUNK", 50)  # one image per chunk
    net = small_net()
    x = torch.randn(5, 3, 9, 9, dtype=F64)
    r = reference_rows(net, x)["4"]
    torch.testing.assert_close(input_covariances(net, x, "4")["4"].matrix, r.T @ r)


def test_too_many_features_are_refused_before_the_data_runs_or_skipped():
    net = small_net()
    with pytest.raises(ValueError, match=r"layer '4' has 54 input features.*max_features=53"):
        input_covariances(net, [object()], ["0", "4"], max_features=53)
    covs = input_covariances(
        net, torch.randn(2, 3, 9, 9, dtype=F64), max_features=27, skip_large=True
    )
    assert list(covs) == ["0"]
    covs = input_covariances(net, torch.randn(2, 3, 9, 9, dtype=F64), max_features=54)
    assert list(covs) == ["0", "4", "6"]


def test_bad_data_and_arguments():
    net = small_net()
    with pytest.raises(
        TypeError, match="^input_covariances: data must be a tensor or an iterable of batches, "
        "got int$"
    ):  # fmt: skip
        input_covariances(net, 3)
    with pytest.raises(
        TypeError, match=r"^input_covariances: each batch must be a tensor or an \(input, target\) "
        "pair with a tensor input; batch 1 gives str$"
    ):  # fmt: skip
        input_covariances(net, [torch.randn(1, 3, 9, 9, dtype=F64), ("x", 1)])
    with pytest.raises(TypeError, match="batch 0 gives Tensor"):
        input_covariances(net, [torch.tensor(1.0)])
    with pytest.raises(ValueError, match="^input_covariances: data yielded no batches$"):
        input_covariances(net, [])
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="batches must be a positive int"):
            input_covariances(net, [], batches=bad)
    net.train()
    with pytest.raises(RuntimeError):
        input_covariances(net, [torch.randn(1, 4, 9, 9, dtype=F64)])
    assert all(m.training for m in net.modules())
    assert not net[0]._forward_pre_hooks  # hooks removed on failure


def test_unbatched_inputs_are_rows_too(monkeypatch):
    monkeypatch.setattr(covariance, "_CHUNK", 30)  # a few rows of the image at a time

    class Unbatched(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, dtype=F64)
            self.lin = nn.Linear(4, 2, dtype=F64)

        def forward(self, x):
            return self.lin(self.conv(x[0]))  # (3, 2, 4) -> lin over the last axis

    net = Unbatched()
    x = torch.randn(1, 2, 4, 6, dtype=F64)
    covs = input_covariances(net, x)
    rows = layer_rows(net.conv, x[0])
    torch.testing.assert_close(covs["conv"].matrix, rows.T @ rows)
    h = net.conv(x[0]).detach().reshape(-1, 4)
    assert covs["lin"].rows == 6
    torch.testing.assert_close(covs["lin"].matrix, h.T @ h)


# -- rows paired with a partly compressed model ------------------------------------------------
def half_compressed(net):
    """A copy of ``net`` whose first conv is replaced by a compressed layer."""
    from tensornet.nn import TNConv2d

    work = copy.deepcopy(net)
    work[0] = TNConv2d.from_conv(net[0], "svd", ranks=1)
    return work


def test_paired_covariances_are_the_grams_of_both_models_rows(monkeypatch):
    monkeypatch.setattr(covariance, "_CHUNK", 400)  # a few images per chunk
    net = small_net()
    work = half_compressed(net).train()
    x = torch.randn(10, 3, 9, 9, dtype=F64)
    covs = input_covariances(net, DataLoader(TensorDataset(x), batch_size=4), ["4", "6"],
                             compressed=work)  # fmt: skip
    dense, seen = reference_rows(net, x, ("4", "6")), reference_rows(work, x, ("4", "6"))
    for name in ("4", "6"):
        x0, x1 = dense[name], seen[name]
        assert not torch.allclose(x0, x1)
        assert covs[name].rows == x0.shape[0]
        torch.testing.assert_close(covs[name].matrix, x1.T @ x1)
        torch.testing.assert_close(covs[name].cross, x1.T @ x0)
        torch.testing.assert_close(covs[name].target, x0.T @ x0)
    assert all(m.training for m in work.modules())
    assert not any(m._forward_pre_hooks for m in (*net.modules(), *work.modules()))
    with pytest.raises(ValueError, match="layer '0' of compressed is a TNConv2d, not the dense"):
        input_covariances(net, x, ["0"], compressed=work)
    # a layer shared by both models (the dense one put back) counts each model's rows once
    work[4] = net[4]
    again = input_covariances(net, x, ["4"], compressed=work)["4"]
    torch.testing.assert_close(again.matrix, covs["4"].matrix)
    torch.testing.assert_close(again.cross, covs["4"].cross)


def test_layers_fitted_in_turn_see_the_inputs_of_the_layers_built_before():
    torch.manual_seed(0)
    shared = nn.Linear(6, 6, dtype=F64)
    net = nn.Sequential(nn.Linear(4, 6, dtype=F64), nn.Tanh(), shared, nn.Tanh(), shared)
    x = torch.randn(20, 4, dtype=F64)
    got = {}

    def build(name, cov):
        got[name] = cov
        layer = nn.Linear(*reversed(net.get_submodule(name).weight.shape), dtype=F64)
        return (layer if name == "0" else None), name

    work = copy.deepcopy(net)
    out = fit_sequentially(net, x, ["0", "2"], build, work, {"0": ("0",), "2": ("2", "4")})
    assert [r[1] for r in out] == ["0", "2"]
    assert work[0] is out[0][0] and work[2] is not net[2]  # installed; "2" kept as it was
    torch.testing.assert_close(got["0"].matrix, x.T @ x)
    torch.testing.assert_close(got["0"].cross, x.T @ x)
    h = torch.tanh(out[0][0](x)).detach()  # what the shared layer sees first in work
    h0 = torch.tanh(net[0](x)).detach()
    h2, h20 = torch.tanh(work[2](h)).detach(), torch.tanh(net[2](h0)).detach()
    rows, rows0 = torch.cat([h, h2]), torch.cat([h0, h20])
    torch.testing.assert_close(got["2"].matrix, rows.T @ rows)
    torch.testing.assert_close(got["2"].cross, rows.T @ rows0)
    assert got["2"].rows == 40


def test_layers_too_large_to_fit_get_no_covariance(monkeypatch):
    monkeypatch.setattr(covariance, "MAX_FEATURES", 27)
    net = small_net()
    got = {}
    fit_sequentially(net, torch.randn(2, 3, 9, 9, dtype=F64), ["0", "4"],
                     lambda n, c: got.setdefault(n, (None, c)), copy.deepcopy(net))  # fmt: skip
    assert isinstance(got["0"][1], InputCovariance) and got["4"][1] is None


def test_second_moments_integer_inputs_and_the_default_size_limit():
    c = torch.randn(3, 3, dtype=F64)
    torch.testing.assert_close(InputCovariance(c, 1).second_moment, c)
    torch.testing.assert_close(InputCovariance(c, 0).second_moment, c)
    torch.testing.assert_close(InputCovariance(c, 4).second_moment, c / 4)
    assert InputCovariance(c, 4).features == 3
    # integer inputs (token ids) reach the model as they are
    net = nn.Sequential(nn.Embedding(5, 3, dtype=F64), nn.Linear(3, 2, dtype=F64))
    ids = torch.tensor([[0, 1], [4, 4]])
    cov = input_covariances(net, [ids])["1"]
    e = net[0](ids).detach().reshape(-1, 3)
    torch.testing.assert_close(cov.matrix, e.T @ e)
    big = nn.Sequential(nn.Linear(5000, 2))
    with pytest.raises(ValueError, match=r"5,000 x 5,000 float64 matrix, 191 MiB.*4,096"):
        input_covariances(big, [object()])


def test_fitted_layers_are_installed_at_their_own_name_without_aliases():
    net = nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Linear(3, 2, dtype=F64))
    work = copy.deepcopy(net)
    new = nn.Linear(3, 3, dtype=F64)
    fit_sequentially(net, torch.randn(4, 3, dtype=F64), ["0"], lambda n, c: (new, c), work)
    assert work[0] is new and net[0] is not new


def test_batch_limits_count_every_batch_paired_or_not():
    net = small_net()
    x = torch.randn(9, 3, 9, 9, dtype=F64)
    batches = [x[:3], x[3:6], x[6:]]
    r = reference_rows(net, x[:6], ("6",))["6"]
    two = input_covariances(net, batches, ["6"], batches=2)["6"]
    assert two.rows == 6
    torch.testing.assert_close(two.matrix, r.T @ r)
    work = half_compressed(net)
    paired = input_covariances(net, batches, ["6"], batches=2, compressed=work)["6"]
    seen = reference_rows(work, x[:6], ("6",))["6"]
    assert paired.rows == 6
    torch.testing.assert_close(paired.cross, seen.T @ r)


def test_a_layer_fitted_once_is_installed_at_every_alias():
    shared = nn.Linear(3, 3, dtype=F64)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    work = copy.deepcopy(net)
    new = nn.Linear(3, 3, dtype=F64)
    fit_sequentially(net, torch.randn(4, 3, dtype=F64), ["0"], lambda n, c: (new, c), work,
                     {"0": ("0", "2")})  # fmt: skip
    assert work[0] is new and work[2] is new


def test_layers_without_rows_are_left_out_and_later_ones_kept():
    """Grouped, 1-d and transposed convs have no rows: left out, the layers after them kept."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 2)
    )
    covs = input_covariances(net, torch.randn(3, 4, 5, 5))
    assert sorted(covs) == ["1", "3"]
    assert not has_rows(nn.ConvTranspose2d(2, 2, 3)) and not has_rows(nn.Conv1d(2, 2, 3))
