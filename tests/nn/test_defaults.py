"""The default format (``compress(format="auto")``) is never worse than a truncated SVD.

On trained weights of every model in ``models/`` (one epoch of Adam on digits, 8x8), plus a small
net with 2x2 and 5x5 kernels: for each compressed layer, the relative Frobenius error of the
default format at fractions 0.1, 0.25 and 0.5 is at most that of the truncated SVD of the
matricised kernel ``(out | in kh kw)`` with at most the same number of factor parameters,
computed in float64 from the singular values. ResNet-18/50 run at widths 8-64 and VGG-16 at
widths 8-64 (its ``CONFIG`` / 8) to keep the training short; their layer kinds and kernel
shapes are those of the full models.
"""

import math

import pytest
import torch
from torch import nn

import models.vgg as vgg
from models import MODEL_NAMES, build_model
from models.resnet import BasicBlock, Bottleneck, ResNet
from studies.common.data import load_digits
from studies.common.training import evaluate, train
from tensornet.nn import TNConv2d, compress, default_format
from tensornet.nn.defaults import AUTO, DEFAULT_FORMAT, kernel_class

FRACTIONS = (0.1, 0.25, 0.5)
TOL = 1e-9


class KernelNet(nn.Module):
    """2x2, 3x3 and 5x5 convs (no model in models/ has 2x2 or 5x5 kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 32, 2)
        self.conv4 = nn.Conv2d(32, 32, 2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _narrow_vgg16() -> nn.Module:
    narrow = tuple(c if c == "M" else c // 8 for c in vgg.CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vgg, "CONFIG", narrow)
        return build_model("vgg16", 1, 10, 8)


BUILDERS = {
    "vanilla_cnn": lambda: build_model("vanilla_cnn", 1, 10, 8),
    "garipov": lambda: build_model("garipov", 1, 10, 8),
    "hybrid_cnn": lambda: build_model("hybrid_cnn", 1, 10, 8),
    "resnet20": lambda: build_model("resnet20", 1, 10, 8),
    "resnet18": lambda: ResNet(BasicBlock, (2, 2, 2, 2), (8, 16, 32, 64), 1, 10),
    "resnet50": lambda: ResNet(Bottleneck, (3, 4, 6, 3), (8, 16, 32, 64), 1, 10),
    "vgg16": _narrow_vgg16,
    "kernels": KernelNet,
}


def test_every_model_is_covered():
    assert set(MODEL_NAMES) <= set(BUILDERS)


@pytest.fixture(scope="session")
def trained_models():
    """Every model after one epoch of Adam on digits, as float64 in eval mode."""
    data = load_digits(seed=0, limit=600)
    out = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        model = build()
        before = evaluate(model, data.val)
        history = train(model, data, epochs=1, lr=2e-3, batch_size=32, progress=False)
        assert history[0]["val_accuracy"] != before  # the weights did move
        out[name] = model.double().eval()
    return out


def svd_error(weight: torch.Tensor, params: int) -> float:
    """Relative error of the truncated SVD of ``(out | in kh kw)`` with at most ``params``."""
    m = weight.detach().double().reshape(weight.shape[0], -1)
    s = torch.linalg.svdvals(m)
    rank = min(params // sum(m.shape), len(s))
    return math.sqrt(float(s[rank:].square().sum() / s.square().sum()))


def fits(fraction: float):
    """Layers where rank 1 (and a Tucker core) fits in ``fraction`` of the kernel, twice over."""

    def predicate(name: str, module: nn.Module) -> bool:
        w = module.weight
        return fraction * w.numel() >= 2 * (w.shape[0] + w[0].numel())

    return predicate


def violations(model: nn.Module, fraction: float, format=None) -> list[tuple]:
    """(layer, class, error, svd error) of every layer ``compress`` makes worse than the SVD.

    Every conv and linear layer large enough for ``fraction`` is compressed (first and last too),
    with ``compress``'s default format unless ``format`` is given.
    """
    args = () if format is None else (format,)
    small, report = compress(model, *args, layers=fits(fraction), fraction=fraction, skip=())
    assert report.layers, "nothing was compressed"
    out = []
    for r in report.layers:
        dense = model.get_submodule(r.name)
        layer = small.get_submodule(r.name)
        w = dense.weight.detach()
        with torch.no_grad():
            err = float((layer.weight - w).norm() / w.norm())
        assert err == pytest.approx(r.error, abs=1e-9)
        base = svd_error(w, layer.structure.num_params)
        if err > base + TOL:
            out.append((r.name, kernel_class(dense), err, base))
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_default_is_never_worse_than_svd_on_trained_weights(trained_models, name):
    model = trained_models[name]
    for fraction in FRACTIONS:
        assert violations(model, fraction) == [], (name, fraction)


def test_the_check_rejects_tt_and_tucker2_as_defaults(trained_models):
    """TT and Tucker-2 with one rank cap lose to the SVD on trained 3x3 and 2x2 kernels."""
    for fmt in ("tt", "tucker2"):
        found = {
            cls
            for name in ("resnet20", "kernels")
            for fraction in FRACTIONS
            for _, cls, _, _ in violations(trained_models[name], fraction, fmt)
        }
        assert {"3x3", "2x2"} <= found, fmt


def test_the_classes_covered_are_linear_1x1_2x2_3x3_5x5(trained_models):
    classes = {
        kernel_class(m)
        for model in trained_models.values()
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }
    assert classes == {"linear", "1x1", "2x2", "3x3", "5x5"}


# -- default_format, kernel_class and compress's hook ------------------------------------------
@pytest.mark.parametrize(
    "module, cls",
    [
        (nn.Linear(8, 4), "linear"),
        (nn.Conv2d(4, 8, 1), "1x1"),
        (nn.Conv2d(4, 8, 2), "2x2"),
        (nn.Conv2d(4, 8, 3), "3x3"),
        (nn.Conv2d(4, 8, (1, 5)), "1x5"),
        (nn.Conv2d(4, 8, (7, 3)), "7x3"),
    ],
)
def test_default_format_is_svd_for_every_kind_and_kernel(module, cls):
    assert kernel_class(module) == cls
    fmt, options = default_format(module)
    assert (fmt, options) == ("svd", {}) and DEFAULT_FORMAT == "svd"
    options["x"] = 1  # a fresh dict each call
    assert default_format(module) == ("svd", {})


@pytest.mark.parametrize("fn", [default_format, kernel_class])
def test_only_conv_and_linear_layers_have_a_default(fn):
    with pytest.raises(
        TypeError, match=rf"^{fn.__name__}: expected an nn.Conv2d or nn.Linear, got"
    ):
        fn(nn.ReLU())
    with pytest.raises(TypeError, match="got TNConv2d$"):
        fn(TNConv2d(4, 4, 3, format="svd", ranks=2))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.Conv2d(8, 16, 3),
        nn.Conv2d(16, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 4, 32),
        nn.Linear(32, 5),
    )


def _formats(report):
    return {r.name: r.format for r in report.layers}


def test_compress_defaults_to_auto_and_a_named_format_wins():
    net = _net()
    _, report = compress(net, fraction=0.5)
    assert _formats(report) == {"1": "svd", "2": "svd", "4": "svd"}
    assert compress.__defaults__[0] == AUTO == "auto"
    _, report = compress(net, "tt", fraction=0.5)
    assert set(_formats(report).values()) == {"tt"}
    _, report = compress(net, {"linear": "tucker2", "conv": AUTO}, fraction=0.5)
    assert _formats(report) == {"1": "svd", "2": "svd", "4": "tucker2"}
    _, report = compress(net, {"1": "tt", "conv": "auto"}, fraction=0.5)
    assert _formats(report) == {"1": "tt", "2": "svd"}
    _, report = compress(
        net, lambda name, m: "auto" if isinstance(m, nn.Linear) else "cp", fraction=0.5
    )
    assert _formats(report) == {"1": "cp", "2": "cp", "4": "svd"}
    _, report = compress(net, lambda name, m: ("tt", {}), fraction=0.5)
    assert set(_formats(report).values()) == {"tt"}
