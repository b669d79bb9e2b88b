"""All 7 cut spectra of every conv kernel of a ResNet-50 (its real layer shapes, random float32
weights): `tn.kernel_spectra` (batched by shape, float64 Gram route) vs a plain loop of
`torch.linalg.svdvals` over the same 371 matricisations, plus a dense matmul for GFLOP/s context.
The 36 1x1 kernels alone show what sharing the matricisations of equivalent cuts saves (4 of a
1x1 kernel's 7 cuts are its out x in matrix, 3 are one row): 72 decompositions instead of 252.
"""

import time

import numpy as np
import pytest
import torch

import tensornet as tn


def resnet50_conv_shapes() -> list[tuple[int, int, int, int]]:
    shapes = [(64, 3, 7, 7)]
    inplanes = 64
    for planes, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
        for b in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes, planes, 3, 3), (planes * 4, planes, 1, 1)]
            if b == 0:
                shapes.append((planes * 4, inplanes, 1, 1))
            inplanes = planes * 4
    return shapes


@pytest.fixture(scope="module")
def weights():
    g = torch.Generator().manual_seed(0)
    shapes = resnet50_conv_shapes()
    assert len(shapes) == 53
    return {f"conv{i}": torch.randn(*s, generator=g) for i, s in enumerate(shapes)}


@pytest.fixture(scope="module")
def weights_1x1(weights):
    return {name: w for name, w in weights.items() if w.shape[2:] == (1, 1)}


def plain_loop(weights):
    out = []
    for w in weights.values():
        node = tn.Node(w, tn.KERNEL_LEGS[4])
        for left, _ in tn.cuts(node.legs):
            out.append(torch.linalg.svdvals(node.matricize(left)))
    return out


def test_kernel_spectra_resnet50(benchmark, weights):
    spectra = benchmark.pedantic(tn.kernel_spectra, args=(weights,), rounds=3, iterations=1)
    assert len(spectra) == 371
    # accuracy on a sample of real shapes against a float64 SVD (every value above 1e-3 of max)
    for sp in spectra[::23]:
        node = tn.Node(weights[sp.name].double(), tn.KERNEL_LEGS[4])
        ref = torch.linalg.svdvals(node.matricize(sp.left_legs)).numpy()
        big = ref > 1e-3 * ref[0]
        np.testing.assert_allclose(sp.values.numpy()[big], ref[big], rtol=1e-4)


def test_kernel_spectra_resnet50_1x1(benchmark, weights_1x1):
    assert len(weights_1x1) == 36
    spectra = benchmark.pedantic(tn.kernel_spectra, args=(weights_1x1,), rounds=3, iterations=1)
    assert len(spectra) == 36 * 7
    by_cut = {(sp.name, sp.label): sp for sp in spectra}
    for name, w in list(weights_1x1.items())[::7]:
        ref = torch.linalg.svdvals(w[:, :, 0, 0].double()).numpy()
        for label in ("out|in,kh,kw", "in|out,kh,kw", "out,kh|in,kw", "out,kw|in,kh"):
            np.testing.assert_allclose(by_cut[name, label].values.numpy(), ref, rtol=1e-6)
        row = by_cut[name, "out,in|kh,kw"].values.numpy()
        np.testing.assert_allclose(row, [float(w.double().norm())], rtol=1e-9)


def test_truncation_sweep_resnet50_1x1(benchmark):
    """A sweep of four of ResNet-50's 1x1 convs (trivial evaluation): 8 SVDs, not 28."""
    from tensornet.analysis import truncation_sweep

    torch.manual_seed(0)
    shapes = [(256, 1024), (1024, 256), (512, 2048), (2048, 512)]
    model = torch.nn.Sequential(*(torch.nn.Conv2d(i, o, 1) for i, o in shapes))
    rows = benchmark.pedantic(
        truncation_sweep, args=(model, lambda m: 0.0), kwargs={"chis": [8], "progress": False},
        rounds=3, iterations=1,
    )  # fmt: skip
    assert len(rows) == 4 * (4 * 2 + 3)  # out x in cuts: chi 8 and full; row cuts: chi 1
    by_cut = {(r["layer"], r["cut"], r["chi"]): r["rel_error"] for r in rows}
    for layer in "0123":
        same = {by_cut[layer, c, 8] for c in ("out|in,kh,kw", "in|out,kh,kw", "out,kh|in,kw")}
        assert len(same) == 1


def test_plain_svdvals_loop_resnet50(benchmark, weights):
    values = benchmark.pedantic(plain_loop, args=(weights,), rounds=3, iterations=1)
    assert len(values) == 371


def test_dense_matmul_gflops(benchmark):
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.pedantic(torch.matmul, args=(a, b), rounds=5, iterations=1, warmup_rounds=1)
    start = time.perf_counter()
    torch.matmul(a, b)
    benchmark.extra_info["gflops"] = 2 * n**3 / (time.perf_counter() - start) / 1e9
