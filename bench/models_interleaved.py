"""Whole-model forward times, interleaved: dense, compressed, ``to_standard`` and compiled.

The pytest-benchmark suite (``test_bench_models.py``) times each model in its own rounds, so
load that comes and goes lands on one model; here every round runs each variant once, in turn,
and the medians over rounds are compared. Same cases as the suite (batch 32, 32x32 inputs,
2 threads by default, eval, no grad).

    python bench/models_interleaved.py --cases resnet20-25 resnet20-50 vgg16-25 --rounds 30
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_bench_models import MODEL_FORMATS, MODELS, models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(MODELS))
    parser.add_argument("--formats", nargs="+", default=list(MODEL_FORMATS))
    parser.add_argument("--compile", nargs="*", default=["tucker2"], help="formats to compile")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for case in args.cases:
        for fmt in args.formats:
            dense, small, standard, x, extra = models(case, fmt)
            variants = {"dense": dense, "compressed": small, "standard": standard}
            if fmt in args.compile:
                compiled = torch.compile(small)
                with torch.no_grad():
                    torch.testing.assert_close(compiled(x), small(x), rtol=1e-4, atol=1e-5)
                variants["compiled"] = compiled
            times: dict[str, list[float]] = {k: [] for k in variants}
            with torch.no_grad():
                for m in variants.values():  # warm up
                    m(x)
                for _ in range(args.rounds):
                    for name, m in variants.items():
                        t0 = time.perf_counter()
                        m(x)
                        times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            cells = "  ".join(
                f"{k} {1e3 * v:7.2f} ms ({v / med['compressed']:.2f}x)" for k, v in med.items()
            )
            print(
                f"{case:<12} {fmt:<8} params {extra['params_ratio']:.3f}  {cells}  "
                f"kept {extra['kept']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
