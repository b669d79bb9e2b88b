"""BatchNorm recalibration of the studies' compressed models: the batches, the switch, the CLI.

A compressed (or truncated, or fine-tuned) model is scored after recomputing its BatchNorm
statistics on a few training batches (:func:`tensornet.nn.recalibrate_bn`: no labels, no
weight change), so a study compares what the compression kept, not how far the activations
drifted from statistics collected on the dense model. A model without BatchNorm is left as it
is.

Examples
--------
>>> import torch
>>> from torch.utils.data import TensorDataset
>>> train = TensorDataset(torch.arange(10.0).reshape(10, 1), torch.zeros(10))
>>> [len(b) for b in calibration_batches(train, seed=0, batch_size=4, count=2)]
[4, 4]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import tensornet.nn as tnn

from . import cli

__all__ = ["add_calibration_arguments", "calibration_batches", "recalibrated"]

#: The default number of training batches the statistics are recomputed on.
CALIBRATION_BATCHES = 8


def calibration_batches(
    train: TensorDataset, seed: int, batch_size: int, count: int, device: Any = "cpu"
) -> list[torch.Tensor]:
    """``count`` input batches of ``batch_size`` training images, the same for a given ``seed``
    (the first of a seeded permutation; fewer when the split is smaller)."""
    x = train.tensors[0]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    picked = order[: batch_size * count]
    return [x[picked[i : i + batch_size]].to(device) for i in range(0, len(picked), batch_size)]


def recalibrated(model: nn.Module, batches: list[torch.Tensor] | None) -> nn.Module:
    """``model`` with its BatchNorm statistics recomputed on ``batches`` (``None``: unchanged),
    in eval mode.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    >>> float(recalibrated(net, [torch.ones(4, 1, 3, 3)])[1].running_var.sum())
    0.0
    """
    if batches and tnn.batchnorm_layers(model):
        tnn.recalibrate_bn(model, batches, progress=False)
    return model.eval()


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-recalibrate-bn`` (dest ``recalibrate_bn``) and ``--calibration-batches``."""
    parser.add_argument(
        "--no-recalibrate-bn",
        dest="recalibrate_bn",
        action="store_false",
        help="score compressed models with the trained model's BatchNorm statistics",
    )
    parser.add_argument(
        "--calibration-batches",
        type=cli.positive_int,
        default=CALIBRATION_BATCHES,
        help="training batches the BatchNorm statistics are recomputed on (default "
        f"{CALIBRATION_BATCHES})",
    )
