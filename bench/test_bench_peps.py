"""PEPS norms: 4x4 with bond 4 and 5x5 with bond 3 (physical dim 2, float64).

Side by side with quimb's ``auto-hq`` contraction (cotengra's hyper-optimized path):
- first call, planning included: tensornet `contract()` after `tn.clear_cache()`; quimb with a
  fresh `cotengra.AutoHQOptimizer` (what optimize="auto-hq" builds) and cotengra's caches
  emptied;
- repeats, planning excluded: both with their paths cached;
- the executor alone: tensornet running quimb's path.

Target: tensornet within 1.3x of quimb in both columns.

On a shared machine, compare CPU time with one thread (the figures in issue 11's note):
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/test_bench_contract.py \
        bench/test_bench_peps.py bench/test_bench_overhead.py bench/test_bench_sliced.py \
        --benchmark-only --benchmark-timer=time.process_time
except for the two first-call tests, which need wall time (quimb's auto-hq searches in worker
processes, whose CPU time a process timer does not see): add ``-k first_call`` and
``--benchmark-timer=time.perf_counter``.

Then the question of issue 11, "why does a 0.16 GFLOP path run slower than a 0.29 GFLOP one":
on PEPS 5x5, one cotengra hyper-optimized path minimizing FLOPs and one minimizing
FLOPs + memory traffic ("combo"), each run by tensornet and by one `torch.tensordot` per step.
"""

import pytest
import torch
from _networks import fresh_quimb_auto_hq, network, peps_norm, quimb_network, tensordot_runner

import tensornet as tn

CASES = {"4x4_bond4": (4, 4, 4), "5x5_bond3": (5, 5, 3)}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def peps(request):
    tensors, legs = peps_norm(*CASES[request.param])
    net = network(tensors, legs)
    expected = net.contract(optimize="greedy").tensor
    return tensors, legs, net, expected


def test_peps_tensornet_first_call(benchmark, peps):
    _, _, net, expected = peps

    def first_call():
        tn.clear_cache()
        return net.contract()

    result = benchmark.pedantic(first_call, rounds=5, iterations=1, warmup_rounds=1)
    torch.testing.assert_close(result.tensor, expected)
    benchmark.extra_info["plan"] = str(net.plan())


def test_peps_tensornet_repeat(benchmark, peps):
    _, _, net, expected = peps
    net.contract()
    result = benchmark(net.contract)
    torch.testing.assert_close(result.tensor, expected)
    plan = net.plan()
    benchmark.extra_info.update(
        optimizer=plan.optimizer, gflop=plan.flops / 1e9, search_s=plan.search_seconds
    )


def test_peps_quimb_auto_hq_first_call(benchmark, peps):
    pytest.importorskip("quimb.tensor")
    tensors, legs, _, expected = peps
    qnet = quimb_network(tensors, legs)

    def first_call():
        return qnet.contract(all, optimize=fresh_quimb_auto_hq())

    result = benchmark.pedantic(first_call, rounds=5, iterations=1, warmup_rounds=1)
    torch.testing.assert_close(torch.as_tensor(result), expected)


def test_peps_quimb_auto_hq_repeat(benchmark, peps):
    pytest.importorskip("quimb.tensor")
    tensors, legs, _, expected = peps
    qnet = quimb_network(tensors, legs)
    qnet.contract(all, optimize="auto-hq")
    result = benchmark(qnet.contract, all, optimize="auto-hq")
    torch.testing.assert_close(torch.as_tensor(result), expected)
    tree = qnet.contraction_tree(optimize="auto-hq")
    benchmark.extra_info["gflop"] = 2 * tree.total_flops() / 1e9


def test_peps_tensornet_runs_quimbs_path(benchmark, peps):
    pytest.importorskip("quimb.tensor")
    tensors, legs, net, expected = peps
    path = quimb_network(tensors, legs).contraction_tree(optimize="auto-hq").get_path()
    net.contract(optimize=list(path))
    result = benchmark(net.contract, optimize=list(path))
    torch.testing.assert_close(result.tensor, expected)


@pytest.fixture(scope="module")
def peps5_paths():
    ctg = pytest.importorskip("cotengra")
    tensors, legs = peps_norm(5, 5, 3)
    net = network(tensors, legs)
    paths = {}
    for minimize in ("flops", "combo"):
        opt = ctg.HyperOptimizer(
            methods=["greedy"],
            max_repeats=64,
            minimize=minimize,
            parallel=False,
            progbar=False,
            optlib="random",
            seed=0,
        )
        paths[minimize] = list(net.plan(optimize=opt).path)
    return tensors, legs, net, paths


@pytest.mark.parametrize("minimize", ["flops", "combo"])
@pytest.mark.parametrize("executor", ["tensornet", "tensordot"])
def test_peps5_path_flops_vs_time(benchmark, peps5_paths, minimize, executor):
    tensors, legs, net, paths = peps5_paths
    path = paths[minimize]
    plan = net.plan(optimize=path)
    if executor == "tensornet":
        net.contract(optimize=path)
        result = benchmark(net.contract, optimize=path).tensor
    else:
        result = benchmark(tensordot_runner(legs, path), *tensors)
    torch.testing.assert_close(result, net.contract(optimize="greedy").tensor)
    benchmark.extra_info.update(gflop=plan.flops / 1e9, largest=plan.largest_intermediate)
