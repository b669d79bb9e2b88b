"""How a CPU conv's time scales with its channel count: why small Tucker-2 cores stay slow.

A 3x3 conv (and a 1x1 conv) with ``c`` input and ``c`` output channels on a batch of 32
maps, channels-last and NCHW, timed interleaved (each round runs every case once; minimum and
median over rounds), with its GFLOP/s. oneDNN vectorises over channels in blocks of the SIMD
width (16 floats with AVX-512), so below 16 channels the time stops falling with the FLOPs: a
rank-6 core of a compressed 16-channel layer costs about what the dense 16-channel conv does.

    python bench/conv_channels.py --side 32 --channels 4 6 8 12 16 24 32 --threads 1
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 6, 8, 12, 16, 24, 32])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    torch.manual_seed(0)
    cases = {}
    for c in args.channels:
        x = torch.randn(args.batch, c, args.side, args.side)
        for layout, inp in (("nchw", x), ("cl", x.contiguous(memory_format=torch.channels_last))):
            for k in (3, 1):
                w = torch.randn(c, c, k, k)
                flops = 2 * args.batch * c * c * k * k * args.side**2
                cases[(c, k, layout)] = (inp, w, k // 2, flops)
    times = {key: [] for key in cases}
    with torch.no_grad():
        for inp, w, pad, _ in cases.values():
            F.conv2d(inp, w, padding=pad)
        for _ in range(args.rounds):
            for key, (inp, w, pad, _) in cases.items():
                start = clock()
                F.conv2d(inp, w, padding=pad)
                times[key].append(clock() - start)
    print(f"batch {args.batch}, {args.side}x{args.side}, threads {args.threads}")
    for (c, k, layout), v in times.items():
        low, med = min(v), statistics.median(v)
        gflops = cases[(c, k, layout)][3] / low / 1e9
        print(
            f"{k}x{k} conv {c:>3}->{c:<3} {layout:<4}  min {1e3 * low:7.3f} ms  "
            f"median {1e3 * med:7.3f} ms  {gflops:6.1f} GFLOP/s"
        )


if __name__ == "__main__":
    main()
