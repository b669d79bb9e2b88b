"""Whole compressed models and their ``to_standard`` form, forward pass, side by side.

Cases (issue 19): batch 32, float32, CPU with 2 threads (``TENSORNET_BENCH_THREADS``), eval
mode, no grad:

- ``test_model``: ResNet-20 with every layer (but the first and the classifier) at 25 % and
  50 % of its parameters and VGG-16 at 25 %, for Tucker-2, TT, CP and ALDS-grouped layers:
  the dense model, the compressed model, its ``to_standard`` form (plain torch modules; layers
  with no plain form within 1.1x stay compressed, ``extra_info["kept"]`` counts them) and both
  under ``torch.compile`` (skipped, with the reason, where compiling fails);
- ``test_layer``: one compressed layer of every format (3x3 convs 64->64 at 32x32 and
  256->256 at 8x8, linear 512->512; 25 %) vs its plain chain (``fallback="chain"``, written
  even when slower, so the ratio is visible for every format).

The ``to_standard`` criterion is the ratio of medians within one run:
``python bench/test_bench_models.py BENCH.json`` prints them from a ``--benchmark-json`` file;
``python bench/test_bench_models.py --interleaved`` times each layer and its chain alternately
(min and median ratios), which survives a busy machine better.
"""

import json
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict

import pytest
import torch
from torch import nn

from tensornet.formats import format_names
from tensornet.nn import TNConv2d, TNLinear, compress, to_standard
from tensornet.nn.export import conv_sequence, linear_sequence

BATCH = 32
MODELS = {
    "resnet20-25": ("resnet20", 0.25),
    "resnet20-50": ("resnet20", 0.5),
    "vgg16-25": ("vgg16", 0.25),
}
MODEL_FORMATS = {
    "tucker2": "tucker2",
    "tt": "tt",
    "cp": "cp",
    "grouped": ("grouped", {"channel_groups": 4}),
}
IMPLS = ["dense", "compressed", "standard", "compiled-compressed", "compiled-standard"]
LAYER_FORMATS = sorted(format_names())
OPTIONS = {"grouped": {"channel_groups": 4}}
LAYERS = {"conv64x32": (64, 32), "conv256x8": (256, 8), "linear512": (512, None)}


pytestmark = pytest.mark.usefixtures("two_threads")  # bench/conftest.py


def timed(benchmark, fn, rounds=7):
    with torch.no_grad():
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=2)


_MODELS: dict = {}


def models(case, fmt):
    """(dense, compressed, standard, input, extra info), built once per case."""
    key = (case, fmt)
    if key not in _MODELS:
        from models import build_model

        name, fraction = MODELS[case]
        torch.manual_seed(0)
        dense = build_model(name, 3, 10, 32).eval()
        x = torch.randn(BATCH, 3, 32, 32)
        small, report = compress(dense, MODEL_FORMATS[fmt], fraction=fraction, example_input=x)
        small.eval()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            standard = to_standard(small, tuple(x.shape)).eval()
        kept = sum(isinstance(m, (TNConv2d, TNLinear)) for m in standard.modules())
        with torch.no_grad():
            err = (standard(x) - small(x)).abs().max() / small(x).abs().max()
        params = {
            "dense": sum(p.numel() for p in dense.parameters()),
            "compressed": sum(p.numel() for p in small.parameters()),
            "standard": sum(p.numel() for p in standard.parameters()),
        }
        extra = {
            "params": params,
            "params_ratio": report.params_ratio,
            "kept": kept,
            "kept_why": [str(w.message) for w in caught],
            "standard_rel_error": float(err),
        }
        _MODELS[key] = (dense, small, standard, x, extra)
    return _MODELS[key]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fmt", list(MODEL_FORMATS))
@pytest.mark.parametrize("case", list(MODELS))
def test_model(benchmark, case, fmt, impl):
    dense, small, standard, x, extra = models(case, fmt)
    benchmark.group = f"model {case} {fmt}"
    benchmark.extra_info.update(case=case, format=fmt, impl=impl, **extra)
    model = {"dense": dense, "compressed": small, "standard": standard}.get(impl)
    if impl.startswith("compiled-"):
        base = small if impl == "compiled-compressed" else standard
        model = torch.compile(base)
        try:
            with torch.no_grad():
                torch.testing.assert_close(model(x), base(x), rtol=1e-4, atol=1e-5)
        except Exception as exc:  # report why and move on
            pytest.skip(
                f"torch.compile fails on this model ({type(exc).__name__}: {str(exc)[:200]}); "
                "compiling compressed models is issue 19 item 8 (the COMPILE fix)"
            )
    timed(benchmark, lambda: model(x))


_LAYERS: dict = {}


def layer_case(shape, fmt):
    """(compressed layer, its plain chain or None, input), built once."""
    key = (shape, fmt)
    if key not in _LAYERS:
        torch.manual_seed(0)
        c, n = LAYERS[shape]
        opts = OPTIONS.get(fmt, {})
        if n is None:
            lin = nn.Linear(c, c)
            layer = TNLinear.from_linear(lin, fmt, fraction=0.25, **opts)
            x = torch.randn(BATCH, c)
            make = linear_sequence
        else:
            conv = nn.Conv2d(c, c, 3, padding=1)
            layer = TNConv2d.from_conv(conv, fmt, fraction=0.25, **opts)
            x = torch.randn(BATCH, c, n, n)
            make = conv_sequence
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chain = make(layer, tuple(x.shape), fallback="chain", measure=False)
        _LAYERS[key] = (layer, None if chain is layer else chain, x)
    return _LAYERS[key]


@pytest.mark.parametrize("impl", ["compressed", "standard"])
@pytest.mark.parametrize("fmt", LAYER_FORMATS)
@pytest.mark.parametrize("shape", list(LAYERS))
def test_layer(benchmark, shape, fmt, impl):
    layer, chain, x = layer_case(shape, fmt)
    benchmark.group = f"layer {shape} {fmt}"
    benchmark.extra_info.update(shape=shape, format=fmt, impl=impl, params=layer.num_params)
    if impl == "standard":
        if chain is None:
            pytest.skip(f"{fmt} {shape}: no plain chain with at most the layer's parameters")
        benchmark.extra_info["standard_params"] = sum(p.numel() for p in chain.parameters())
        benchmark.extra_info["modules"] = [type(m).__name__ for m in chain]
        timed(benchmark, lambda: chain(x))
    else:
        with torch.no_grad():
            layer(x)
        benchmark.extra_info["plan"] = layer._plan_for(
            x.reshape(-1, x.shape[-1]) if x.ndim == 2 else x
        ).name
        timed(benchmark, lambda: layer(x))


def summarize(path):
    """Median-time ratios (to_standard / compressed, and vs dense) from a benchmark JSON."""
    with open(path) as f:
        data = json.load(f)
    groups: dict = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][b["extra_info"]["impl"]] = (b["stats"]["median"], b["extra_info"])
    for group in sorted(groups):
        row = groups[group]
        if "compressed" not in row:
            continue
        comp = row["compressed"][0]
        parts = [f"{impl} {t * 1e3:8.2f} ms ({t / comp:4.2f}x)" for impl, (t, _) in row.items()]
        info = row["compressed"][1]
        tail = f"  kept {info['kept']}" if "kept" in info else f"  plan {info.get('plan')}"
        print(f"{group:<28} " + "  ".join(parts) + tail)


def interleaved(rounds=15):
    """Per-layer chain / layer time, the two run alternately (robust on a busy machine)."""
    torch.set_num_threads(int(os.environ.get("TENSORNET_BENCH_THREADS", "2")))
    for shape in LAYERS:
        for fmt in LAYER_FORMATS:
            layer, chain, x = layer_case(shape, fmt)
            if chain is None:
                print(f"{shape:<10} {fmt:<9} no plain chain at the layer's parameters")
                continue
            times: dict = {"layer": [], "chain": []}
            with torch.no_grad():
                layer(x), chain(x)
                for _ in range(rounds):
                    for key, fn in (("layer", layer), ("chain", chain)):
                        start = time.perf_counter()
                        fn(x)
                        times[key].append(time.perf_counter() - start)
            lo = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(
                f"{shape:<10} {fmt:<9} layer {lo['layer'] * 1e3:8.3f} ms  chain "
                f"{lo['chain'] * 1e3:8.3f} ms  min ratio {lo['chain'] / lo['layer']:5.2f}  "
                f"median ratio {med['chain'] / med['layer']:5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    # python bench/test_bench_models.py BENCH.json | --interleaved
    if sys.argv[1] == "--interleaved":
        interleaved()
    else:
        summarize(sys.argv[1])
