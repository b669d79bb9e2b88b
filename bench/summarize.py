"""Ratio tables from a pytest-benchmark JSON file of ``bench/test_bench_layers.py``.

Usage: ``python bench/summarize.py BENCH.json`` (after ``pytest bench/test_bench_layers.py
--benchmark-only --benchmark-json BENCH.json``). Prints, per case (shape, fraction, format):
the medians of our layer, the dense conv and tltorch's two implementations, our speedup over
dense and over tltorch's faster one, the theoretical MAC reduction of the chosen plan, and how the
chosen plan compares with the fastest candidate measured.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(path: str) -> list[dict]:
    with open(path) as f:
        return json.load(f)["benchmarks"]


def tables(benchmarks: list[dict]) -> str:
    layer: dict[tuple, dict[str, float]] = defaultdict(dict)
    cands: dict[tuple, list[tuple[str, float, bool]]] = defaultdict(list)
    meta: dict[tuple, dict] = {}
    model: dict[str, float] = {}
    for b in benchmarks:
        p = b["params"]
        median = b["stats"]["median"]
        device = p.get("device", "cpu")
        if b["name"].startswith(("test_resnet20", "test_vanilla")):
            which = "ResNet-20" if b["name"].startswith("test_resnet20") else "vanilla_cnn"
            model[f"{which} {p['impl']} ({device})"] = median
            continue
        key = (device, p["shape"], p["fraction"], p["fmt"])
        meta[key] = b["extra_info"]
        if b["name"].startswith("test_layer"):
            layer[key][p["impl"]] = median
        elif b["name"].startswith("test_candidate"):
            ex = b["extra_info"]
            cands[key].append((ex["candidate"], median, bool(ex["chosen"])))
    lines = [
        "| device | shape | fraction | format | params | ours ms | dense ms | tltorch ms "
        "(fact / recon) | vs dense | vs tltorch | chosen vs fastest candidate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst, within, scored = 1.0, 0, 0
    for key in sorted(layer):
        device, shape, fraction, fmt = key
        row = layer[key]
        ours, dense = row.get("ours"), row.get("dense")
        fact, recon = row.get("tltorch-factorized"), row.get("tltorch-reconstructed")
        peers = [v for v in (fact, recon) if v is not None]
        best_peer = min(peers) if peers else None
        choice = ""
        if cands.get(key):
            fastest = min(cands[key], key=lambda c: c[1])
            chosen = [c for c in cands[key] if c[2]]
            if chosen:
                ratio = chosen[0][1] / fastest[1]
                worst = max(worst, ratio)
                scored += 1
                within += ratio <= 1.05
                choice = f"{ratio:.2f} ({chosen[0][0]} vs {fastest[0]})"
        ex = meta[key]
        params = f"{ex['params']:,}/{ex['dense_params']:,}"
        tl = "" if not peers else f"{fact * 1e3:.2f} / {recon * 1e3:.2f}"
        vs_peer = "" if best_peer is None else f"{best_peer / ours:.2f}x"
        lines.append(
            f"| {device} | {shape} | {fraction} | {fmt} | {params} | {ours * 1e3:.2f} | "
            f"{dense * 1e3:.2f} | {tl} | {dense / ours:.2f}x | {vs_peer} | {choice} |"
        )
    lines.append(f"\nworst chosen/fastest ratio: {worst:.3f}")
    if scored:
        lines.append(
            f"chosen within 5 % of the fastest candidate: {within} of {scored} cases "
            f"({100 * within / scored:.0f} %; the issue asks >= 90 %)"
        )
    if model:
        lines.append(
            "\nWhole models (ResNet-20 batch 32, vanilla_cnn batch 64): "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sorted(model.items()))
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(load(sys.argv[1])))
