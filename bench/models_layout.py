"""Whole-model speed with what a shipping user turns on: BatchNorm folding and channels-last.

For each case (model, fraction) and format, nine variants run interleaved (each round runs
every variant once, in a new random order; medians and minima over rounds): dense and
compressed, each plain (NCHW), with eval BatchNorm folded (``tnn.fold_batchnorm``: torch's
conv-BN fusion for dense layers, the out-leg factor scaled for compressed ones), channels-last
(``model.to(memory_format=torch.channels_last)`` and a channels-last input) and both, and the
compressed model with both and every layer's ``plan="measure"`` (times its likely plans once
per input shape, keeps the fastest, instead of the cost model's pick). Ratios are dense
(plain) time over each variant's, and each compressed variant against the dense variant with
the same options (the fair ratio). The MAC reduction is the whole model's (dense /
compressed, every conv and linear counted). Batch 32, 32x32 inputs, eval, no grad. On a
shared machine, ``--clock cpu`` (one thread) and glibc's ``MALLOC_MMAP_THRESHOLD_`` set high
(fresh 2 MB activations otherwise page-fault on every forward) steady the figures.

    python bench/models_layout.py --cases resnet20-25 resnet20-10 resnet18-25 \
        --formats tucker2 tt --rounds 30 --threads 1
"""

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_bench_models import MODEL_FORMATS, MODELS, models

from tensornet.nn import TNLayer, fold_batchnorm
from tensornet.nn.measure import dense_flops

MODELS.update({"resnet20-10": ("resnet20", 0.1), "resnet18-25": ("resnet18", 0.25)})
CL = torch.channels_last


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of every conv, linear and compressed layer of one forward on ``x``."""
    total = [0]

    def count(module, args, _out):
        inp = args[0]
        if isinstance(module, TNLayer):
            total[0] += module._plan_for(inp).flops
        else:
            total[0] += dense_flops(module, tuple(inp.shape))

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (TNLayer, nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


def variants(dense, small, x):
    """name -> (model, input) for the nine variants."""
    xc = x.contiguous(memory_format=CL)
    out = {}
    for tag, model in (("dense", dense), ("tn", small)):
        folded = fold_batchnorm(model)
        out[tag] = (model, x)
        out[f"{tag}+fold"] = (folded, x)
        out[f"{tag}+cl"] = (copy.deepcopy(model).to(memory_format=CL), xc)
        out[f"{tag}+cl+fold"] = (copy.deepcopy(folded).to(memory_format=CL), xc)
    measured = copy.deepcopy(out["tn+cl+fold"][0])
    for m in measured.modules():
        if isinstance(m, TNLayer):
            m.plan = "measure"  # each layer times its likely plans once, keeps the fastest
    out["tn+cl+fold+measure"] = (measured, xc)
    with torch.no_grad():
        ref = small(x)
        for name, (m, inp) in out.items():
            if name.startswith("tn"):
                torch.testing.assert_close(m(inp), ref, rtol=1e-4, atol=1e-4)
    return out


def timed(runs, rounds, clock=time.perf_counter):
    times = {k: [] for k in runs}
    with torch.no_grad():
        for m, inp in runs.values():  # warm up: plans chosen, oneDNN primitives made
            m(inp)
            m(inp)
        order = list(runs)
        shuffle = random.Random(0).shuffle
        for _ in range(rounds):
            shuffle(order)  # no variant always runs first (after another's cache traffic)
            for name in order:
                m, inp = runs[name]
                start = clock()
                m(inp)
                times[name].append(clock() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["resnet20-25", "resnet20-10"])
    parser.add_argument("--formats", nargs="+", default=["tucker2", "tt"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this thread's CPU time (1 thread only; robust to other processes' load)",
    )
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu measures one thread: use --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, rounds {args.rounds}, clock {args.clock}, batch 32, 32x32")
    for case in args.cases:
        for fmt in args.formats:
            if fmt not in MODEL_FORMATS:
                raise SystemExit(f"unknown format {fmt!r}; one of {list(MODEL_FORMATS)}")
            dense, small, _, x, extra = models(case, fmt)
            macs = model_flops(dense, x) / model_flops(small, x)
            times = timed(variants(dense, small, x), args.rounds, clock)
            med = {k: statistics.median(v) for k, v in times.items()}
            low = {k: min(v) for k, v in times.items()}
            print(f"{case} {fmt}: params {extra['params_ratio']:.3f}, MAC reduction {macs:.2f}x")
            for name in times:
                twin = name.replace("tn", "dense").replace("+measure", "")
                vs_dense = med["dense"] / med[name], low["dense"] / low[name]
                print(
                    f"  {name:<18} median {1e3 * med[name]:7.2f} ms  min {1e3 * low[name]:7.2f} ms"
                    f"  vs dense {vs_dense[0]:5.2f}x (min {vs_dense[1]:5.2f}x)"
                    f"  vs {twin} {med[twin] / med[name]:5.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
