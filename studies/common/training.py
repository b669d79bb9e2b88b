"""Supervised training and evaluation loops shared by the studies (seeded, CPU-deterministic)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .data import DatasetSplits
from .progress import Progress, print_line


def _batches(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches, shuffled when a generator is given."""
    if isinstance(dataset, TensorDataset):
        # Slicing the tensors directly avoids DataLoader's per-sample collation overhead.
        x, y = dataset.tensors[0], dataset.tensors[1]
        n = len(x)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            if order is None:
                yield x[start : start + batch_size], y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                yield x[idx], y[idx]
        return
    yield from DataLoader(
        dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator
    )


def evaluate(
    model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", batch_size: int = 512
) -> float:
    """Classification accuracy of ``model`` on ``dataset``, in [0, 1].

    The model is run in eval mode without gradients; its previous train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for x, y in _batches(dataset, batch_size):
                logits = model(x.to(device))
                correct += int((logits.argmax(dim=1).cpu() == y).sum())
                total += len(y)
    finally:
        model.train(was_training)
    return correct / total if total else float("nan")


def correct(
    model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", batch_size: int = 512
) -> np.ndarray:
    """Per-example correctness (bool array, in dataset order) of ``model`` on ``dataset``.

    Its mean is :func:`evaluate`'s accuracy; kept per example, it lets two models be compared
    on the same images (paired tests and bootstrap intervals).
    """
    was_training = model.training
    model.eval()
    hits = []
    try:
        with torch.no_grad():
            for x, y in _batches(dataset, batch_size):
                hits.append((model(x.to(device)).argmax(dim=1).cpu() == y).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)


def pack_correct(mask: np.ndarray) -> str:
    """Per-example correctness as a compact JSON-friendly string of 0s and 1s.

    >>> import numpy as np
    >>> pack_correct(np.array([True, False, True]))
    '101'
    >>> unpack_correct("101").tolist()
    [1.0, 0.0, 1.0]
    """
    return (np.asarray(mask, dtype=bool).astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def unpack_correct(text: str) -> np.ndarray:
    """The inverse of :func:`pack_correct`: float64 0/1 per example."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.float64) - ord("0")


def split_scores(
    model: nn.Module, data: DatasetSplits, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Validation and test accuracy of ``model``, and its per-image test correctness.

    ``test_correct`` is :func:`pack_correct`'s string, so two models' scores can be paired per
    test image.
    """
    hits = correct(model, data.test, device=device)
    return {
        "val_accuracy": evaluate(model, data.val, device=device),
        "test_accuracy": float(hits.mean()),
        "test_correct": pack_correct(hits),
    }


class SplitAccuracy:
    """Accuracy on the validation and the test split: the evaluation of a truncation sweep.

    A plain picklable object (no closure), so a Dask cluster can receive it once per worker.

    Parameters
    ----------
    val, test
        The two splits.
    device
        Where the model runs.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x, y = torch.zeros(4, 3), torch.tensor([0, 0, 1, 1])
    >>> score = SplitAccuracy(TensorDataset(x, y), TensorDataset(x, y))
    >>> model = torch.nn.Linear(3, 2)   # zero inputs: it always predicts the same class
    >>> sorted(score(model).items())
    [('test_accuracy', 0.5), ('val_accuracy', 0.5)]
    """

    def __init__(self, val: Dataset, test: Dataset, device: str | torch.device = "cpu") -> None:
        self.val, self.test, self.device = val, test, device

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``{"val_accuracy": ..., "test_accuracy": ...}`` of ``model``."""
        return {
            "val_accuracy": evaluate(model, self.val, device=self.device),
            "test_accuracy": evaluate(model, self.test, device=self.device),
        }


def _optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def _epoch(
    model: nn.Module,
    dataset: Dataset,
    opt: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass of cross-entropy training over ``dataset``: mean loss and accuracy."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in _batches(dataset, batch_size, generator):
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(dim=1) == y).sum())
        seen += len(y)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def epoch_line(row: dict[str, float]) -> str:
    """One training epoch as a line of the log.

    >>> epoch_line({"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.75, "val_accuracy": 0.7,
    ...             "seconds": 3.25})
    'train: loss 0.5000, train accuracy 0.7500, val accuracy 0.7000 (3.2 s)'
    """
    return (
        f"train: loss {row['train_loss']:.4f}, train accuracy {row['train_accuracy']:.4f}, "
        f"val accuracy {row['val_accuracy']:.4f} ({row['seconds']:.1f} s)"
    )


def train(
    model: nn.Module,
    data: DatasetSplits,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool | None = None,
    log: Callable[[str], None] = print_line,
) -> list[dict[str, float]]:
    """Train ``model`` in place with cross-entropy on ``data.train``, validating each epoch.

    Parameters
    ----------
    model
        The network; it is moved to ``device`` and left in its previous train/eval mode.
    data
        Splits to train on (``train``) and validate on (``val``).
    epochs, lr, batch_size
        Passes over the training set, learning rate and mini-batch size.
    optimizer, momentum, weight_decay
        ``"adam"`` or ``"sgd"`` (``momentum`` applies to SGD only) and L2 weight decay.
    device
        Where to train.
    seed
        Seeds the shuffling and any randomness inside the model (e.g. dropout), without touching
        the global RNG state: two runs from the same initial weights are identical on CPU.
    progress
        ``True``: a tqdm bar (time left, loss, validation accuracy); ``False``: silent;
        ``None``: the bar on a terminal, otherwise one line per epoch with the time left
        (see :class:`studies.common.progress.Progress`).
    log
        Where the per-epoch lines go (default: stdout).

    Returns
    -------
    list of dict
        Per epoch: ``epoch`` (from 1), ``train_loss`` (mean over samples), ``train_accuracy``,
        ``val_accuracy`` and ``seconds``.
    """
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    opt = _optimizer(model, optimizer, lr, momentum, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        with Progress(epochs, "epoch", show=progress, log=log, echo=False) as bar:
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                loss, accuracy = _epoch(model, data.train, opt, batch_size, generator, device)
                row = {
                    "epoch": epoch,
                    "train_loss": loss,
                    "train_accuracy": accuracy,
                    "val_accuracy": evaluate(model, data.val, device=device),
                    "seconds": time.perf_counter() - start,
                }
                history.append(row)
                bar.step(
                    epoch_line(row),
                    {"loss": f"{row['train_loss']:.4f}", "val": f"{row['val_accuracy']:.4f}"},
                )
    model.train(was_training)
    return history
