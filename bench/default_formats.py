"""Which format should ``compress`` use by default?  Every format against a truncated SVD.

``python bench/default_formats.py [--narrow] [--cp-limit N] [--models ...] [--out PATH]``

Every reference model of ``models/`` is trained briefly on scikit-learn's digits (8x8, one
channel, Adam, seed 0), then every conv (``groups == 1``) and linear layer of the trained model
(float64) is compressed with each candidate format at parameter fractions 0.1, 0.25 and 0.5
(``TNConv2d.from_conv`` / ``TNLinear.from_linear`` with ``fraction=``, i.e. one rank cap, as
``compress`` does). Its true relative Frobenius error ``||W - W'|| / ||W||`` is set against
the truncated SVD of the matricised kernel ``(out | in kh kw)`` at the same parameter count:
the largest SVD rank ``r`` with ``r (out + in kh kw)`` at most the format's factor count.
``ratio = error / svd_error``; below 1 the format wins.

The models have only 3x3, 1x1 and linear layers; an extra small net (``kernels``: 2x2, 3x3
and 5x5 convs) trained the same way covers the other kernel classes and is marked as such.

Writes ``<out>.csv`` (one row per layer, format and fraction) and ``<out>.md`` (per kernel
class and format: median and largest ratio, share of layers where the format is not worse).

CP is fitted only on kernels of at most ``--cp-limit`` elements (default 300,000): CP-ALS takes
minutes per layer there already (a 96x64x5x5 kernel: 2.5 min for three fractions on one core)
and grows with size times rank, i.e. hours for a 512x512x3x3 kernel. ``--narrow`` trains
ResNet-18/50 and VGG-16 at widths 16-128 instead of 64-512 (same layer kinds and kernel shapes).
The committed table says what was run.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models.vgg as vgg
from models import build_model
from models.resnet import BasicBlock, Bottleneck, ResNet
from studies.common.data import load_digits
from studies.common.training import evaluate, train
from tensornet.nn import TNConv2d, TNLinear

FRACTIONS = (0.1, 0.25, 0.5)
# name: (format, options)
CANDIDATES: dict[str, tuple[str, dict]] = {
    "svd": ("svd", {}),
    "tucker2": ("tucker2", {}),
    "tucker": ("tucker", {}),
    "tt": ("tt", {}),
    "cp": ("cp", {}),
    "grouped2": ("grouped", {"channel_groups": 2}),
    "grouped4": ("grouped", {"channel_groups": 4}),
    "ht": ("ht", {}),
    "tr": ("tr", {}),
}
EPOCHS = {"resnet18": 2, "resnet50": 2, "vgg16": 3}  # others: 5


class KernelNet(nn.Module):
    """A small extra net with 2x2, 3x3 and 5x5 convs (the reference models have none of 2x2/5x5)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.conv3 = nn.Conv2d(64, 64, 2)
        self.conv4 = nn.Conv2d(64, 96, 5, padding=2)
        self.conv5 = nn.Conv2d(96, 96, 2)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = torch.relu(conv(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def make_model(name: str, narrow: bool) -> nn.Module:
    """A reference model for digits (ResNet-18/50, VGG-16 at widths 16-128 with ``narrow``)."""
    if name == "kernels":
        return KernelNet()
    if narrow and name == "resnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), (16, 32, 64, 128), 1, 10)
    if narrow and name == "resnet50":
        return ResNet(Bottleneck, (3, 4, 6, 3), (16, 32, 64, 128), 1, 10)
    if narrow and name == "vgg16":
        narrow_config = tuple(c if c == "M" else c // 4 for c in vgg.CONFIG)
        previous, vgg.CONFIG = vgg.CONFIG, narrow_config
        try:
            return build_model(name, 1, 10, 8)
        finally:
            vgg.CONFIG = previous
    return build_model(name, 1, 10, 8)


def trained(name: str, data, narrow: bool, seed: int = 0) -> tuple[nn.Module, float]:
    """The model after a brief Adam training on digits, in float64 eval mode, and its accuracy."""
    torch.manual_seed(seed)
    model = make_model(name, narrow)
    train(model, data, EPOCHS.get(name, 5), lr=1e-3, seed=seed, progress=False)
    accuracy = evaluate(model, data.test)
    return model.double().eval(), accuracy


def kernel_class(module: nn.Module) -> str:
    """``linear``, ``1x1``, ``2x2``, ``3x3``, ``5x5`` ... (``KxL`` for non-square kernels)."""
    if isinstance(module, nn.Linear):
        return "linear"
    kh, kw = module.kernel_size
    return f"{kh}x{kw}"


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv (groups 1) and linear layer, by name."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    ]


def svd_error_at(s: torch.Tensor, rows: int, cols: int, params: int) -> tuple[int, float]:
    """Rank and relative error of the truncated SVD (spectrum ``s``) with at most ``params``."""
    rank = min(params // (rows + cols), len(s))
    total = float(s.square().sum())
    return rank, math.sqrt(max(float(s[rank:].square().sum()), 0.0) / total)


def compressed(module: nn.Module, fmt: str, options: dict, fraction: float):
    """The compressed layer (float64) for one format and fraction."""
    if isinstance(module, nn.Linear):
        return TNLinear.from_linear(module, fmt, fraction=fraction, **options)
    return TNConv2d.from_conv(module, fmt, fraction=fraction, **options)


def measure_layer(model_name: str, name: str, module: nn.Module, cp_limit: int) -> list[dict]:
    """Rows for one layer: every candidate and fraction against the SVD at equal count."""
    w = module.weight.detach().double()
    rows_, cols_ = w.shape[0], w[0].numel()
    s = torch.linalg.svdvals(w.reshape(rows_, cols_))
    norm = float(w.norm())
    rows = []
    for label, (fmt, options) in CANDIDATES.items():
        if fmt == "grouped" and module.weight.shape[1] % options["channel_groups"]:
            continue
        if fmt == "cp" and w.numel() > cp_limit:
            continue
        for fraction in FRACTIONS:
            start = time.perf_counter()
            try:
                layer = compressed(module, fmt, options, fraction)
            except ValueError as err:  # e.g. no rank fits the budget
                print(f"  {name} {label} {fraction}: {err}", file=sys.stderr)
                continue
            seconds = time.perf_counter() - start
            params = layer.structure.num_params
            with torch.no_grad():
                error = float((layer.weight.double() - w).norm()) / norm
            rank, svd_err = svd_error_at(s, rows_, cols_, params)
            rows.append(
                {
                    "model": model_name,
                    "layer": name,
                    "class": kernel_class(module),
                    "shape": "x".join(map(str, w.shape)),
                    "format": label,
                    "fraction": fraction,
                    "ranks": "-".join(map(str, layer.ranks)),
                    "params": params,
                    "error": round(error, 6),
                    "svd_rank": rank,
                    "svd_params": rank * (rows_ + cols_),
                    "svd_error": round(svd_err, 6),
                    "ratio": round(error / svd_err, 4) if svd_err > 0 else float("nan"),
                    "seconds": round(seconds, 3),
                }
            )
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per kernel class and format: layers, median/max ratio, share of cases not worse."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if not math.isnan(r["ratio"]):
            groups[(r["class"], r["format"])].append(r)
    order = {c: i for i, c in enumerate(("linear", "1x1", "2x2", "3x3", "5x5"))}
    out = []
    for (cls, fmt), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0])):
        ratios = [r["ratio"] for r in rs]
        out.append(
            {
                "class": cls,
                "format": fmt,
                "cases": len(rs),
                "median": statistics.median(ratios),
                "max": max(ratios),
                "not_worse": sum(r["error"] <= r["svd_error"] + 1e-9 for r in rs) / len(rs),
                **{
                    f"median@{f}": statistics.median(r["ratio"] for r in rs if r["fraction"] == f)
                    for f in FRACTIONS
                    if any(r["fraction"] == f for r in rs)
                },
            }
        )
    return out


def write(rows: list[dict], accuracy: dict, out: Path, args, seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Default formats: relative weight error of each format / truncated SVD at equal count",
        "",
        f"`python bench/default_formats.py{' --narrow' if args.narrow else ''} "
        f"--cp-limit {args.cp_limit}` "
        f"({seconds / 60:.1f} min, 1 thread). Trained briefly on digits (8x8), float64 weights;",
        "fractions " + ", ".join(map(str, FRACTIONS)) + "; ratio < 1: the format beats SVD.",
        "Test accuracy after training: "
        + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items())
        + ".",
        "`kernels` is an extra net (2x2, 3x3, 5x5 convs), not from models/.",
    ]
    lines.append(f"CP only on kernels of at most {args.cp_limit:,} elements (CP-ALS time).")
    if args.narrow:
        lines.append("--narrow: ResNet-18/50 and VGG-16 at widths 16-128.")
    summ = summary(rows)
    keys = [k for k in summ[0] if k.startswith("median@")]
    lines += [
        "",
        "| class | format | cases | median ratio | max ratio | not worse | "
        + " | ".join(keys)
        + " |",
        "|---" * (6 + len(keys)) + "|",
    ]
    for s in summ:
        lines.append(
            f"| {s['class']} | {s['format']} | {s['cases']} | {s['median']:.3f} | "
            f"{s['max']:.3f} | {100 * s['not_worse']:.0f} % | "
            + " | ".join(f"{s.get(k, float('nan')):.3f}" for k in keys)
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--narrow", action="store_true")
    parser.add_argument("--cp-limit", type=int, default=300_000)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "default_formats"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.models or [
        "vanilla_cnn",
        "garipov",
        "hybrid_cnn",
        "resnet20",
        "resnet18",
        "resnet50",
        "vgg16",
        "kernels",
    ]
    data = load_digits()
    start = time.perf_counter()
    rows, accuracy = [], {}
    for model_name in names:
        model, accuracy[model_name] = trained(model_name, data, args.narrow)
        print(f"{model_name}: test accuracy {accuracy[model_name]:.3f}", flush=True)
        for name, module in layers_of(model):
            t = time.perf_counter()
            rows += measure_layer(model_name, name, module, args.cp_limit)
            print(
                f"  {name} {tuple(module.weight.shape)} {time.perf_counter() - t:.1f}s", flush=True
            )
    write(rows, accuracy, Path(args.out), args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
