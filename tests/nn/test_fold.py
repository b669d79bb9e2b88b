"""fold_batchnorm / batchnorm_pairs: eval-mode BatchNorm folded into the layer before it."""

import pytest
import torch
from torch import nn

from models import build_model
from tensornet.nn import (
    TNConv1d,
    TNConv2d,
    TNConvTranspose2d,
    TNLinear,
    batchnorm_pairs,
    compress,
    fold_batchnorm,
)


def _assert_folds_exactly(net: nn.Module, shape: tuple[int, ...]) -> None:
    """In float64 with random BatchNorm statistics, the folded model computes the same."""
    net = net.double()
    _randomize_bn(net)
    net.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(net)(x), net(x), rtol=0, atol=1e-10)


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.2 + torch.rand(n, generator=g, dtype=torch.float64))
                if m.affine:
                    m.weight.copy_(torch.randn(n, generator=g, dtype=torch.float64))
                    m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))
            m.eps = 1e-3


def _resnet(name: str, fmt: str | None):
    torch.manual_seed(0)
    dense = build_model(name, 3, 10, 8).double()
    _randomize_bn(dense)
    dense.eval()
    if fmt is None:
        return dense
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    small, _ = compress(dense, fmt, fraction=0.3, example_input=x)
    return small.eval()


@pytest.mark.parametrize("fmt", [None, "tucker2", "tt", "cp"])
def test_resnet20_folded_equals_unfolded(fmt):
    model = _resnet("resnet20", fmt)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (out - ref).abs().max() <= 1e-10 * ref.abs().max()
    assert ref.abs().max() > 0


def test_resnet18_projection_shortcuts_fold():
    model = _resnet("resnet18", "tucker2")
    pairs = batchnorm_pairs(model)
    # stem, 8 blocks x 2, 3 projection shortcuts (conv + BN in a Sequential)
    assert len(pairs) == 1 + 16 + 3
    assert ("layer2.0.shortcut.0", "layer2.0.shortcut.1") in pairs
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref, out = model(x), fold_batchnorm(model)(x)
    assert (out - ref).abs().max() <= 1e-10 * ref.abs().max()


def test_pairs_of_resnet20_and_their_kinds():
    model = _resnet("resnet20", "tucker2")
    pairs = batchnorm_pairs(model)
    assert pairs[0] == ("conv1", "bn1")
    assert ("layer3.2.conv2", "layer3.2.bn2") in pairs
    assert len(pairs) == 19
    assert all(isinstance(model.get_submodule(a), TNConv2d) for a, _ in pairs[1:])


def test_output_read_elsewhere_is_not_paired():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)
            self.conv2 = nn.Conv2d(2, 2, 1)
            self.bn2 = nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y + self.bn2(self.conv2(x))

    assert batchnorm_pairs(Branch()) == [("conv2", "bn2")]


def test_bn_not_after_a_layer_is_not_paired():
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2))
    assert batchnorm_pairs(net) == []


def _scaled(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> None:
    _randomize_bn(nn.Sequential(bn), seed=3)
    bn.float().eval()


@pytest.mark.parametrize("bias", [True, False])
def test_compressed_conv_values_and_bias(bias):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias).double()
    layer = TNConv2d.from_conv(conv, "tucker2", ranks=(3, 2))
    bn = nn.BatchNorm2d(6).double()
    _randomize_bn(nn.Sequential(bn), seed=2)
    net = nn.Sequential(layer, bn).eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], nn.Identity)
    assert folded[0].bias is not None and folded[0].bias.shape == (6,)
    assert folded[0].ranks == (3, 2)
    assert net[0].decomposition_error is not None and folded[0].decomposition_error is None
    with torch.no_grad():
        assert torch.allclose(folded(x), ref, rtol=0, atol=1e-12)
    # the original is untouched (a copy was folded)
    assert isinstance(net[1], nn.BatchNorm2d)
    assert (net[0].bias is None) == (not bias)
    with torch.no_grad():
        assert torch.equal(net(x), ref)


def test_affine_free_batchnorm_folds():
    torch.manual_seed(2)
    layer = TNConv2d(3, 4, 3, format="cp", ranks=3, bias=False).double()
    bn = nn.BatchNorm2d(4, affine=False).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5, 4.0]))
    net = nn.Sequential(layer, bn).eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(net)(x), net(x), rtol=0, atol=1e-12)


def test_a_float64_batchnorm_folds_into_a_float32_layer_in_its_dtype():
    torch.manual_seed(5)
    layer = TNConv2d(3, 4, 3, format="tucker2", ranks=(2, 2), bias=False)
    bn = nn.BatchNorm2d(4).double()
    _randomize_bn(nn.Sequential(bn), seed=6)
    net = nn.Sequential(layer, bn).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        ref = bn(layer(x).double())
        folded = fold_batchnorm(net)
        out = folded(x)
    assert folded[0].bias.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in folded[0].factors.values())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_inplace_returns_the_model_itself():
    net = nn.Sequential(TNConv2d(3, 4, 3, format="tt", ranks=2), nn.BatchNorm2d(4)).eval()
    assert fold_batchnorm(net, inplace=True) is net
    assert isinstance(net[1], nn.Identity)


def test_conv1d_linear_and_transposed_layers_fold():
    torch.manual_seed(3)
    net = nn.Sequential(
        TNConv1d(3, 5, 3, format="tucker2", ranks=(2, 2)),
        nn.BatchNorm1d(5),
        nn.Flatten(),
        TNLinear(5 * 6, 7, format="svd", ranks=3),
        nn.BatchNorm1d(7),
    ).double()
    _randomize_bn(net)
    net.eval()
    x = torch.randn(4, 3, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        out = fold_batchnorm(net)(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-10)
    up = nn.Sequential(
        TNConvTranspose2d(3, 4, 2, stride=2, format="cp", ranks=3), nn.BatchNorm2d(4)
    )
    _assert_folds_exactly(up, (2, 3, 4, 4))


def test_dense_layers_use_torch_fusion():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ConvTranspose2d(4, 2, 2),
        nn.BatchNorm2d(2),
        nn.Flatten(),
        nn.Linear(2 * 5 * 5, 3),
        nn.BatchNorm1d(3),
    ).double()
    _randomize_bn(net)
    net.eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = fold_batchnorm(net)
    kinds = ["Conv2d", "Identity", "ConvTranspose2d", "Identity", "Flatten", "Linear", "Identity"]
    assert [type(m).__name__ for m in folded] == kinds
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), rtol=0, atol=1e-10)


def test_errors_name_the_pair():
    net = nn.Sequential(TNConv2d(3, 4, 3, format="tt", ranks=2), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"fold_batchnorm\('0', '1'\).*training mode"):
        fold_batchnorm(net)
    net.eval()
    with pytest.raises(ValueError, match="no module named 'bn'"):
        fold_batchnorm(net, pairs=[("0", "bn")])
    with pytest.raises(TypeError, match="conv, linear or compressed layer, got BatchNorm2d"):
        fold_batchnorm(net, pairs=[("1", "1")])
    with pytest.raises(TypeError, match="BatchNorm with running statistics"):
        fold_batchnorm(net, pairs=[("0", "0")])
    stats_free = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(TypeError, match="running statistics"):
        fold_batchnorm(stats_free.eval(), pairs=[("0", "1")])
    wrong = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5)).eval()
    with pytest.raises(ValueError, match="BatchNorm has 5 channels, the layer 4"):
        fold_batchnorm(wrong, pairs=[("0", "1")])
    # the failed calls changed nothing
    assert isinstance(net[1], nn.BatchNorm2d)


def test_tensorized_output_channels_refused():
    conv = nn.Conv2d(4, 6, 3)
    layer = TNConv2d.from_conv(conv, "tucker", ranks=2, out_dims=(2, 3), in_dims=(2, 2))
    net = nn.Sequential(layer, nn.BatchNorm2d(6)).eval()
    with pytest.raises(ValueError, match="no single leg of the kernel indexes the output"):
        fold_batchnorm(net)
    lin = TNLinear.from_linear(nn.Linear(4, 6), "tt", ranks=2, out_dims=(2, 3), in_dims=(2, 2))
    with pytest.raises(ValueError, match="no single leg"):
        fold_batchnorm(nn.Sequential(lin, nn.BatchNorm1d(6)).eval())


def test_grouped_compressed_conv_folds():
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, groups=2, padding=1).double()
    net = nn.Sequential(TNConv2d.from_conv(conv, "tucker2", ranks=(3, 2)), nn.BatchNorm2d(6))
    _assert_folds_exactly(net, (2, 4, 5, 5))


def test_untraceable_model_asks_for_pairs():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: fx cannot trace it
                return self.bn(self.conv(x))
            return x

    with pytest.raises(
        TypeError, match=r"Branchy cannot be traced by torch\.fx \(TraceError: .*pairs="
    ):
        batchnorm_pairs(Branchy())
    net = Branchy().eval()
    folded = fold_batchnorm(net, pairs=[("conv", "bn")])
    assert isinstance(folded.bn, nn.Identity)
