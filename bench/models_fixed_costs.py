"""The fixed cost of a model: everything but its convs (BatchNorm, ReLU, residual adds, ...).

Each variant of ``models_layout.py`` runs beside its *skeleton*: the same model with every
conv and compressed layer replaced by a stub that returns that layer's output (computed once),
so the skeleton's time is what compression cannot shrink (BatchNorm unless folded, ReLU, the
residual adds and shortcuts, pooling, the classifier). Interleaved rounds, minimum and median.

    python bench/models_fixed_costs.py --case resnet20-25 --format tucker2 --rounds 25
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models_layout import models, variants

from tensornet.nn import TNLayer

VARIANTS = ("dense", "dense+cl", "dense+cl+fold", "tn", "tn+fold", "tn+cl+fold")


class _Stub(nn.Module):
    """Returns a fixed tensor: a layer whose cost is left out."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out


def skeleton(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` with each conv and compressed layer replaced by a stub of its output on ``x``."""
    model = copy.deepcopy(model)
    outs = {}

    def keep(name):
        return lambda m, a, o: outs.__setitem__(name, o.clone(memory_format=torch.preserve_format))

    hooks = [
        m.register_forward_hook(keep(name))
        for name, m in model.named_modules()
        if isinstance(m, (TNLayer, nn.Conv2d))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name, out in outs.items():
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, _Stub(out))
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="resnet20-25")
    parser.add_argument("--format", default="tucker2")
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dense, small, _, x, _ = models(args.case, args.format)
    every = variants(dense, small, x)
    runs = {}
    for name in VARIANTS:
        model, inp = every[name]
        runs[name] = (model, inp)
        runs[f"{name} skeleton"] = (skeleton(model, inp), inp)
    times = {k: [] for k in runs}
    with torch.no_grad():
        for model, inp in runs.values():
            model(inp)
        for _ in range(args.rounds):
            for name, (model, inp) in runs.items():
                start = time.thread_time()
                model(inp)
                times[name].append(time.thread_time() - start)
    print(f"{args.case} {args.format}, 1 thread (thread CPU time), {args.rounds} rounds")
    for name, v in times.items():
        print(
            f"  {name:<24} min {1e3 * min(v):7.2f} ms  median {1e3 * statistics.median(v):7.2f} ms"
        )


if __name__ == "__main__":
    main()
