"""``allocate(method="auto")`` against ALDS on ResNet-18 and VGG-16 (CIFAR shapes), issue 21.

Cases (seeded, freshly initialised models ``build_model(name, 3, 10, 32)``, float32, CPU with
``TENSORNET_BENCH_THREADS`` threads (default 2), eval mode, no grad; first and last layers dense):

- ``test_allocate``: the time of ``allocate(model, 0.25, method)`` for ``"alds"`` and
  ``"auto"`` (parameters; one round: an auto allocation takes minutes);
- ``test_forward``: the forward time (batch 32, 32x32) of the dense model and of the models
  ``compress(model, allocation=...)`` builds from those two allocations, at the same budget
  (25 % of the parameters), with the plans chosen for that input;
- ``test_time_budget``: ``allocate(model, 0.5, "auto", measure="time", example_input=x)`` and
  the forward of its model; ``extra_info`` holds the budgeted speed-up (the cost model's dense
  conv/linear seconds over the allocation's) beside the measured one is the ratio of the dense
  model's median to this one's (whole model: BatchNorm, activations and pooling too).

``python bench/test_bench_allocate.py BENCH.json [OUT.md]`` prints (and writes) the table of
medians and ratios from a ``--benchmark-json`` file.
"""

import json
import sys
import time

import pytest
import torch

from tensornet.nn import allocate, compress

BATCH = 32
BUDGET = 0.25  # of the parameters, for alds and auto alike
TIME_BUDGET = 0.5  # of the dense conv/linear seconds (cost model), measure="time"
MODELS = ("resnet18", "vgg16")
METHODS = ("alds", "auto")

pytestmark = pytest.mark.usefixtures("two_threads")  # bench/conftest.py

_CACHE: dict = {}


def dense_model(name):
    """(model, input), built once per name."""
    if name not in _CACHE:
        from models import build_model

        torch.manual_seed(0)
        _CACHE[name] = (build_model(name, 3, 10, 32).eval(), torch.randn(BATCH, 3, 32, 32))
    return _CACHE[name]


def allocation(name, method, measure="params"):
    """(allocation, seconds it took), computed once per case (the benchmark reuses it)."""
    key = (name, method, measure)
    if key not in _CACHE:
        model, x = dense_model(name)
        start = time.perf_counter()
        if measure == "params":
            found = allocate(model, BUDGET, method, progress=False)
        else:
            found = allocate(
                model, TIME_BUDGET, method, measure, example_input=x, progress=False
            )  # fmt: skip
        _CACHE[key] = (found, time.perf_counter() - start)
    return _CACHE[key]


def compressed(name, method, measure="params"):
    """The model ``compress`` builds from the allocation (plans chosen for the input)."""
    key = ("model", name, method, measure)
    if key not in _CACHE:
        model, x = dense_model(name)
        found, _ = allocation(name, method, measure)
        small, _ = compress(model, allocation=found, example_input=x, measure_time=False)
        _CACHE[key] = small.eval()
    return _CACHE[key]


def _info(found):
    formats: dict = {}
    for c in found.layers.values():
        formats[c.label] = formats.get(c.label, 0) + 1
    return {
        "params": found.total_params,
        "model_params": found.model_params,
        "params_ratio": found.total_params / found.model_params,
        "max_frobenius_error": found.max_frobenius_error,
        "formats": formats,
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_allocate(benchmark, name, method):
    benchmark.group = f"allocate {name}"
    benchmark.extra_info.update(model=name, method=method, impl=method, budget=BUDGET)

    def run():
        _CACHE.pop((name, method, "params"), None)
        return allocation(name, method)[0]

    found = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(_info(found))


@pytest.mark.parametrize("impl", ("dense", *METHODS))
@pytest.mark.parametrize("name", MODELS)
def test_forward(benchmark, name, impl):
    model, x = dense_model(name)
    benchmark.group = f"forward {name} {BUDGET:.0%}"
    benchmark.extra_info.update(model=name, impl=impl, batch=BATCH)
    if impl != "dense":
        model = compressed(name, impl)
        benchmark.extra_info.update(_info(allocation(name, impl)[0]))
    with torch.no_grad():
        benchmark.pedantic(lambda: model(x), rounds=7, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("name", MODELS)
def test_time_budget(benchmark, name):
    found, seconds = allocation(name, "auto", "time")
    model, x = dense_model(name)
    small = compressed(name, "auto", "time")
    with torch.no_grad():
        dense_times = []
        for _ in range(7):
            start = time.perf_counter()
            model(x)
            dense_times.append(time.perf_counter() - start)
    benchmark.group = f"time budget {name} {TIME_BUDGET:.0%}"
    benchmark.extra_info.update(
        model=name, impl="auto-time", allocate_seconds=seconds, **_info(found),
        budgeted_speedup=found.model_seconds / found.total_seconds,
        dense_forward_median=sorted(dense_times)[3],
    )  # fmt: skip
    with torch.no_grad():
        benchmark.pedantic(lambda: small(x), rounds=7, iterations=1, warmup_rounds=2)
    median = benchmark.stats.stats.median
    benchmark.extra_info["measured_speedup"] = benchmark.extra_info["dense_forward_median"] / median


def table(path):
    """Markdown lines: medians and ratios of every case in a ``--benchmark-json`` file."""
    with open(path) as f:
        data = json.load(f)
    rows = {(b["group"], b["extra_info"]["impl"]): b for b in data["benchmarks"]}
    lines = [
        "| case | impl | median (s) | ratio | params ratio | formats |",
        "|---|---|---|---|---|---|",
    ]
    for (group, impl), b in sorted(rows.items()):
        info, median = b["extra_info"], b["stats"]["median"]
        base = "alds" if group.startswith("allocate") else "dense"
        ref = rows.get((group, base))
        if impl == "auto-time":
            ratio = (
                f"speed-up measured {info['measured_speedup']:.2f}x, "
                f"budgeted {info['budgeted_speedup']:.2f}x"
            )
        else:
            ratio = f"{median / ref['stats']['median']:.2f}x {base}" if ref else "-"
        fmts = ", ".join(f"{k} {v}" for k, v in sorted(info.get("formats", {}).items()))
        share = f"{info['params_ratio']:.3f}" if "params_ratio" in info else "-"
        lines.append(f"| {group} | {impl} | {median:.4g} | {ratio} | {share} | {fmts} |")
    return lines


if __name__ == "__main__":
    text = "\n".join(table(sys.argv[1]))
    print(text)
    if len(sys.argv) > 2:
        from tensornet.io import atomic_write_text

        atomic_write_text(sys.argv[2], text + "\n")
