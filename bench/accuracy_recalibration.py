"""Accuracy of one-shot compressed models with and without BatchNorm recalibration.

For each dataset, model and seed: train the dense model, then for every allocation method
(``tnn.allocate(..., method=...)``: ALDS and uniform) and parameter budget compress it one-shot
(``compress(allocation=...)``) and score it on the test split three times: as compressed (the
BatchNorm layers keep the dense model's statistics), after ``recalibrate_bn`` on the training
images (no labels, no weight change), and after one epoch of fine-tuning (Adam, from the
recalibrated model; training updates BatchNorm itself).

    OMP_NUM_THREADS=1 python bench/accuracy_recalibration.py --datasets digits --seeds 0 1 2

Writes ``bench/results/accuracy_recalibration[_TAG].csv`` (one row per score) and ``.md`` (mean
+- std over seeds), atomically, after every seed. Not a pytest benchmark: a script.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tensornet.nn as tnn  # noqa: E402
from models import build_model  # noqa: E402
from models.resnet import BasicBlock, ResNet  # noqa: E402
from studies.common.data import load_digits, load_mnist5k  # noqa: E402
from studies.common.training import evaluate, train  # noqa: E402

LOADERS = {"digits": load_digits, "mnist5k": load_mnist5k}
# dense epochs per dataset (Adam, lr 1e-3); mnist5k's ResNet-20 is the alds study's width 8
EPOCHS = {"digits": 10, "mnist5k": 5}
WIDTH = {"digits": 16, "mnist5k": 8}
STAGES = ("oneshot", "recalibrated", "finetuned", "finetuned_recalibrated")
FIELDS = ("dataset", "model", "seed", "method", "budget", "params_ratio", "stage", "accuracy")


def make_model(name: str, dataset: str, data) -> torch.nn.Module:
    if name == "resnet20":
        w = WIDTH[dataset]
        widths = (w, 2 * w, 4 * w)
        return ResNet(BasicBlock, (3, 3, 3), widths, data.in_channels, data.num_classes, "pad")
    return build_model(name, data.in_channels, data.num_classes, data.image_size)


def model_label(name: str, dataset: str) -> str:
    return f"resnet20-w{WIDTH[dataset]}" if name == "resnet20" else name


def run_seed(dataset: str, model_name: str, seed: int, args) -> list[dict]:
    data = LOADERS[dataset](seed=seed)
    torch.manual_seed(seed)
    net = make_model(model_name, dataset, data)
    t0 = time.perf_counter()
    train(net, data, epochs=args.epochs or EPOCHS[dataset], seed=seed, progress=False)
    net.eval()
    label = model_label(model_name, dataset)
    images = data.train.tensors[0]
    calib = [images[i : i + 128] for i in range(0, len(images), 128)]
    dense = {"dense": evaluate(net, data.test)}
    fixed = copy.deepcopy(net)  # the dense model's own statistics are an EMA over training
    tnn.recalibrate_bn(fixed, calib, progress=False)
    dense["dense_recalibrated"] = evaluate(fixed, data.test)
    rows = [
        dict(dataset=dataset, model=label, seed=seed, method="dense", budget=1.0,
             params_ratio=1.0, stage=stage, accuracy=acc)
        for stage, acc in dense.items()
    ]  # fmt: skip
    took = time.perf_counter() - t0
    print(f"[{dataset} {label} seed {seed}] dense {dense['dense']:.3f}, recalibrated "
          f"{dense['dense_recalibrated']:.3f} ({took:.0f} s)", flush=True)  # fmt: skip
    for method in args.methods:
        for budget in args.budgets:
            # "alds-proxy": ALDS choosing by the paper's error proxy instead of the true error
            name, _, error = method.partition("-")
            alloc = tnn.allocate(net, budget, method=name, error=error or "true", progress=False)
            small, report = tnn.compress(net, allocation=alloc)
            small.eval()
            scores = {"oneshot": evaluate(small, data.test)}
            tnn.recalibrate_bn(small, calib, progress=False)
            scores["recalibrated"] = evaluate(small, data.test)
            train(small, data, epochs=1, lr=args.finetune_lr, seed=seed, progress=False)
            small.eval()
            scores["finetuned"] = evaluate(small, data.test)
            tnn.recalibrate_bn(small, calib, progress=False)
            scores["finetuned_recalibrated"] = evaluate(small, data.test)
            for stage in scores:
                rows.append(
                    dict(dataset=dataset, model=label, seed=seed, method=method, budget=budget,
                         params_ratio=report.params_ratio, stage=stage, accuracy=scores[stage])
                )  # fmt: skip
            print(f"[{dataset} {label} seed {seed}] {method} {budget:g} "
                  f"(params {report.params_ratio:.3f}): " + ", ".join(
                      f"{k} {v:.3f}" for k, v in scores.items()), flush=True)  # fmt: skip
    return rows


def atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "accuracy": f"{r['accuracy']:.4f}",
                         "params_ratio": f"{r['params_ratio']:.4f}"})  # fmt: skip
    return buf.getvalue()


def mean_std(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    std = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():.1f} +- {std:.1f}"


def cell(stages: dict[str, list], stage: str) -> str:
    return mean_std([r["accuracy"] for r in stages[stage]]) if stage in stages else ""


def to_markdown(rows: list[dict], args) -> str:
    lines = [
        "# One-shot compression accuracy with and without BatchNorm recalibration",
        "",
        "Test accuracy in %, mean +- std over seeds "
        f"(`python bench/accuracy_recalibration.py {' '.join(sys.argv[1:])}`). Dense: Adam lr "
        "1e-3, epochs per dataset as in the script; one-shot: `allocate(budget, method)` + "
        "`compress(allocation=...)`; recalibrated: `recalibrate_bn` on the training images; "
        f"fine-tuned: one epoch of Adam at lr {args.finetune_lr:g} from the recalibrated model; "
        "+ recal: `recalibrate_bn` again after it. Dense rows: the trained model and the same "
        "with recalibrated statistics (its own are an average over the training run).",
        "",
        "| dataset | model | method | budget | params | seeds | one-shot | recalibrated "
        "| fine-tuned 1 ep | fine-tuned + recal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, dict[str, list]] = {}
    for r in rows:
        key = (r["dataset"], r["model"], r["method"], r["budget"])
        groups.setdefault(key, {}).setdefault(r["stage"], []).append(r)
    for (dataset, model, method, budget), stages in groups.items():
        if method == "dense":
            cells = [cell(stages, s) for s in ("dense", "dense_recalibrated")]
            lines.append(f"| {dataset} | {model} | dense | 1 | 1.000 | {len(stages['dense'])} | "
                         + " | ".join(cells) + " | | |")  # fmt: skip
            continue
        ratio = np.mean([r["params_ratio"] for r in stages["oneshot"]])
        cells = [cell(stages, s) for s in STAGES]
        lines.append(f"| {dataset} | {model} | {method} | {budget:g} | {ratio:.3f} | "
                     f"{len(stages['oneshot'])} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"], choices=LOADERS)
    parser.add_argument("--models", nargs="+", default=["resnet20"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5, 0.6])
    parser.add_argument(
        "--methods", nargs="+", default=["alds", "alds-proxy", "uniform"],
        help="allocate methods; alds-proxy: ALDS by the paper's error proxy",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="dense epochs (default per set)")
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args(argv)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = "accuracy_recalibration" + (f"_{args.tag}" if args.tag else "")
    rows: list[dict] = []
    for dataset in args.datasets:
        for model_name in args.models:
            for seed in args.seeds:
                rows += run_seed(dataset, model_name, seed, args)
                atomic_write(out / f"{stem}.csv", to_csv(rows))
                atomic_write(out / f"{stem}.md", to_markdown(rows, args))
    print(to_markdown(rows, args))


if __name__ == "__main__":
    main()
