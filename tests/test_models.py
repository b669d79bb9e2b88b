"""Reference models run on digits- and CIFAR-shaped inputs and initialise deterministically."""

import pytest
import torch
from torch import nn

from models import MODEL_NAMES, build_model

SHAPES = [(1, 8), (3, 32)]


def convs(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("in_channels,size", SHAPES, ids=["digits", "cifar"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_finite(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels, 10, size)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_init_is_deterministic_given_the_seed(name):
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(build_model(name, 1, 10, 8).state_dict())
    first = next(k for k, v in states[0].items() if v.is_floating_point() and v.numel() > 1)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0][first], states[2][first])


def test_vanilla_cnn_layer_names_and_widths():
    model = build_model("vanilla_cnn", 3, 7, 32, widths=(4, 5, 6, 8))
    assert convs(model) == ["conv1", "conv2", "conv3", "conv4"]
    assert [model.get_submodule(n).out_channels for n in convs(model)] == [4, 5, 6, 8]
    assert model.fc.in_features == 8 * 8 * 8 and model.fc.out_features == 7
    # 8 -> 4 -> 2 on digits; a 1x1 input skips both pools.
    assert build_model("vanilla_cnn", 1, 10, 8).fc.in_features == 64 * 2 * 2
    assert build_model("vanilla_cnn", 1, 10, 1).fc.in_features == 64


def test_garipov_matches_the_paper_on_cifar_and_adapts_on_digits():
    cifar = build_model("garipov", 3, 10, 32)
    widths = [cifar.get_submodule(n).out_channels for n in convs(cifar)]
    assert widths == [64, 64, 128, 128, 128, 128]
    pools = [m for m in cifar.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    assert isinstance(cifar.features.avgpool, nn.AvgPool2d)  # 32 -> 15 -> 7 -> 1
    assert (cifar.fc.in_features, cifar.fc.out_features) == (128, 10)
    digits = build_model("garipov", 1, 10, 8)
    assert isinstance(digits.features.avgpool, nn.AdaptiveAvgPool2d)


@pytest.mark.parametrize(
    "name,n_convs,params",
    [
        ("resnet20", 19, 0.27e6),
        ("resnet18", 20, 11.17e6),
        ("resnet50", 53, 23.5e6),
        ("vgg16", 13, 15e6),
    ],
)
def test_architecture_sizes(name, n_convs, params):
    model = build_model(name, 3, 10, 32)
    assert len(convs(model)) == n_convs
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.02)


def test_cifar_resnets_keep_a_stride_one_stem():
    for name in ("resnet18", "resnet20", "resnet50"):
        stem = build_model(name, 3, 10, 32).conv1
        assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        build_model("alexnet", 3, 10, 32)
