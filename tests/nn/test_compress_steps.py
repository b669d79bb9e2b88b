"""compress's pieces: the report against hand counts and dense recomputations, the checks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tensornet.nn import compress
from tensornet.nn.report import (
    CompressionReport,
    LayerReport,
    _arrow,
    kept_dense,
    layer_kind,
    too_slow,
)


def net():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 16, 3),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 24),
        nn.Linear(24, 5),
    )


def test_report_figures_against_hand_counts_and_dense_kernels():
    model = net()
    x = torch.randn(2, 3, 8, 8)
    small, report = compress(model, "tucker2", fraction=0.5, example_input=x)
    assert [r.name for r in report.layers] == ["2", "4", "6"]
    # dense FLOPs by hand: 2 * batch * out * in * kh * kw * rows * cols
    hand = {"2": 2 * 2 * 12 * 8 * 9 * 4 * 4, "4": 2 * 2 * 16 * 12 * 9 * 2 * 2, "6": 2 * 2 * 24 * 64}
    params = {"2": 12 * 8 * 9 + 12, "4": 16 * 12 * 9 + 16, "6": 24 * 64 + 24}
    for r in report.layers:
        dense, new = model.get_submodule(r.name), small.get_submodule(r.name)
        assert r.kind == layer_kind(dense) == ("linear" if r.name == "6" else "conv")
        assert r.flops_before == hand[r.name]
        assert r.params_before == params[r.name]
        assert r.params_after == sum(p.numel() for p in new.parameters()) < params[r.name]
        assert r.compression == r.params_before / r.params_after
        w = dense.weight.detach().double().reshape(dense.weight.shape[0], -1).numpy()
        w2 = new.weight.detach().double().reshape(w.shape).numpy()
        assert r.error_fro == pytest.approx(np.linalg.norm(w - w2) / np.linalg.norm(w), abs=1e-6)
        assert r.error_spectral == pytest.approx(
            np.linalg.norm(w - w2, 2) / np.linalg.norm(w, 2), abs=1e-6
        )
        assert r.format == new.format and r.ranks == new.ranks and r.aliases == (r.name,)
        assert r.speedup == r.seconds_before / r.seconds_after
        assert r.slower == (r.seconds_after > r.seconds_before)
    assert report.params_before == sum(params.values())
    assert report.params_after == sum(r.params_after for r in report.layers)
    assert report.flops_before == sum(hand.values())
    assert report.flops_after == sum(r.flops_after for r in report.layers)
    assert report.seconds_before == pytest.approx(sum(r.seconds_before for r in report.layers))
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    assert (report.model_params_before, report.model_params_after) == (before, after)
    assert report.params_ratio == after / before
    assert report.input_shape == (2, 3, 8, 8)


def test_kept_dense_report_copies_the_dense_figures():
    _, report = compress(net(), "tt", fraction=0.5, example_input=torch.randn(2, 3, 8, 8))
    r = report.layers[0]
    d = kept_dense(r)
    assert (d.format, d.ranks, d.plan, d.kept_dense) == ("dense", (), None, True)
    assert (d.params_after, d.flops_after, d.seconds_after) == (
        r.params_before,
        r.flops_before,
        r.seconds_before,
    )
    assert (d.error, d.error_fro, d.error_spectral) == (0.0, 0.0, 0.0)
    assert (d.name, d.kind, d.params_before, d.aliases) == (
        r.name,
        r.kind,
        r.params_before,
        r.aliases,
    )
    assert d.speedup == 1.0 and not d.slower and not math.isnan(d.compression)


def test_linear_report_on_a_3d_input_counts_every_row():
    # a linear layer on (2, 3, 16): 6 rows of 16 features; the plan is priced for (6, 16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12), nn.Linear(12, 20), nn.Linear(20, 4))
    x = torch.randn(2, 3, 16)
    small, report = compress(model, "svd", ranks=3, example_input=x, measure_time=False)
    (r,) = report.layers
    layer = small[1]
    assert r.flops_before == 2 * 6 * 12 * 20
    info = layer.plan_info((6, 12))
    row = next(row for row in info.rows if row["name"] == info.chosen)
    assert (r.plan, r.flops_after, r.seconds_after) == (info.chosen, row["flops"], row["seconds"])
    # svd rank 3 runs as two products: 2 * 6 * (12 * 3 + 3 * 20) multiply-adds, or the rebuild
    assert r.flops_after < r.flops_before
    assert r.error == layer.decomposition_error is not None


def _layer(ranks=(2,), **kw):
    figures = dict(seconds_before=2.0, seconds_after=1.0, flops_before=3_000_000)
    figures.update(kw)
    return LayerReport(
        "conv", "conv", "tt", ranks, 120, 40, figures["flops_before"], 1_500_000, 0.25,
        "staged", figures["seconds_before"], figures["seconds_after"], 0.125, 0.5,
    )  # fmt: skip


def test_too_slow_is_strict_at_the_boundary():
    r = _layer(seconds_before=2.0, seconds_after=1.0)
    assert not too_slow(r, 2.0)
    assert too_slow(r, 2.5) and not too_slow(r, 1.5)


def test_report_text_shows_ranks_times_flags_and_forward_only_when_known():
    fits, cut = _layer(ranks=(10, 20, 30, 40, 50)), _layer(ranks=(10, 20, 30, 40, 500))
    slow = _layer(seconds_after=3.0)
    report = CompressionReport([fits, cut, slow, kept_dense(_layer())], 1000, 500, (1, 3, 8, 8))
    text = str(report)
    rows = text.splitlines()[2:6]
    assert "10,20,30,40,50 " in rows[0] and "10,20,30,40..." in rows[1]
    assert "3.0->1.5" in rows[0] and "2000.000->1000.000" in rows[0]
    assert rows[2].endswith(" slower") and rows[3].endswith(" kept dense")
    assert not rows[0].endswith((" slower", " kept dense"))
    assert "12.0->7.5 MFLOP, 8000.000->7000.000 ms estimated for input (1, 3, 8, 8)" in text
    assert "model forward" not in text
    report.forward_before = 0.002
    assert "model forward" not in str(report)
    report.forward_after = 0.001
    assert "model forward (measured, median): 2.000 -> 1.000 ms (2.00x)" in str(report)
    report.forward_before, report.forward_after = None, 0.001
    assert "model forward" not in str(report)


def test_arrow_needs_both_figures():
    assert _arrow(None, 1.0, 1.0, ".1f") == _arrow(1.0, None, 1.0, ".1f") == ""
    assert _arrow(1.0, 2.0, 10.0, ".1f") == "10.0->20.0"
