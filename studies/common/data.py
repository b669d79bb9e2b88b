"""Datasets for the studies: the bundled sklearn digits, and CIFAR / MNIST-style files on disk.

Every loader returns a ``DatasetSplits`` of float32 images (N, C, H, W) normalised per channel
with the training split's mean and std, and int64 labels. Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist")


@dataclass
class DatasetSplits:
    """Train / validation / test splits of one image-classification dataset.

    Attributes
    ----------
    train, val, test
        ``TensorDataset(images, labels)``: float32 (N, C, H, W) and int64 (N,).
    num_classes, in_channels, image_size
        Label count, image channels and the (square) side length.
    name
        Dataset name, e.g. ``"digits"``.
    mean, std
        Per-channel training statistics used for normalisation.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int
    name: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def _split(
    x: np.ndarray, y: np.ndarray, size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split returning (x_rest, x_held, y_rest, y_held) with ``size`` held out.

    Stratified by label; falls back to a plain shuffled split where stratifying is impossible
    (a class with a single image, or fewer held-out images than classes).
    """
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=size, stratify=y, random_state=seed)
    except ValueError:
        return train_test_split(x, y, test_size=size, random_state=seed)


def _build(
    name: str,
    num_classes: int,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    limit: int | None,
) -> DatasetSplits:
    """Cut each split to ``limit``, normalise with training statistics, wrap as tensors."""
    if limit is not None:
        splits = {k: (x[:limit], y[:limit]) for k, (x, y) in splits.items()}
    # float32 throughout and normalised in place: CIFAR's training set in float64 would be 1.2 GB.
    images = {k: np.array(x, dtype=np.float32) for k, (x, _) in splits.items()}
    train_x = images["train"]
    channels = range(train_x.shape[1])
    mean = np.array([train_x[:, c].mean(dtype=np.float64) for c in channels])
    std = np.array([train_x[:, c].std(dtype=np.float64) for c in channels])
    std = np.where(std > 0, std, 1.0)
    shift = mean.astype(np.float32)[None, :, None, None]
    scale = std.astype(np.float32)[None, :, None, None]
    datasets = {}
    for k, (_, y) in splits.items():
        x = images[k]
        x -= shift
        x /= scale
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
        datasets[k] = TensorDataset(torch.from_numpy(x), labels)
    _, channels, height, width = splits["train"][0].shape
    if height != width:
        raise ValueError(f"{name}: expected square images, got {height}x{width}")
    return DatasetSplits(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        num_classes=num_classes,
        in_channels=channels,
        image_size=height,
        name=name,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def load_digits(seed: int = 0, limit: int | None = None) -> DatasetSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 60/20/20, stratified by label.

    Parameters
    ----------
    seed
        Seed of the train / val / test split.
    limit
        Keep only the first ``limit`` images of each split.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.images.astype(np.float64)[:, None]
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = _split(x, y, 0.2, seed)
    x_train, x_val, y_train, y_val = _split(x_rest, y_rest, 0.25, seed)
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    return _build("digits", 10, splits, limit)


def _with_val(
    name: str,
    num_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    val_size: int,
    seed: int,
    limit: int | None,
) -> DatasetSplits:
    if not 0 < val_size < len(train[1]):
        raise ValueError(f"{name}: val_size={val_size} must be between 0 and {len(train[1])}")
    x_train, x_val, y_train, y_val = _split(train[0], train[1], val_size, seed)
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": test}
    return _build(name, num_classes, splits, limit)


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected {path.name} in {path.parent}")
    return path


def _cifar_dir(root: str | Path, dirname: str, first: str, label: str) -> Path:
    """Accept either the pickle directory itself or its parent."""
    root = Path(root).expanduser()
    for candidate in (root, root / dirname):
        if (candidate / first).is_file():
            return candidate
    where = root if root.name == dirname else root / dirname
    raise FileNotFoundError(
        f"{label}: expected {first} in {where} (the python-pickle {label.upper()} directory)"
    )


def _unpickle(path: Path) -> dict:
    # The CIFAR "python version" is distributed only as pickles written by Python 2, so reading
    # it needs pickle with bytes keys; the files are ones the user supplied and points us at.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(batch[label_key], dtype=np.int64)


def load_cifar10(
    root: str | Path, seed: int = 0, val_size: int = 5000, limit: int | None = None
) -> DatasetSplits:
    """CIFAR-10 from ``cifar-10-batches-py`` (data_batch_1..5, test_batch), or its parent.

    Parameters
    ----------
    root
        The python-pickle directory or the directory holding it.
    seed, val_size
        A stratified validation split of ``val_size`` images is carved from training.
    limit
        Keep only the first ``limit`` images of each split.
    """
    folder = _cifar_dir(root, "cifar-10-batches-py", "data_batch_1", "cifar10")
    parts = [
        _cifar_batch(_require(folder / f"data_batch_{i}", "cifar10"), b"labels")
        for i in range(1, 6)
    ]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _cifar_batch(_require(folder / "test_batch", "cifar10"), b"labels")
    return _with_val("cifar10", 10, train, test, val_size, seed, limit)


def load_cifar100(
    root: str | Path, seed: int = 0, val_size: int = 5000, limit: int | None = None
) -> DatasetSplits:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (train, test), or its parent.

    Parameters are as for :func:`load_cifar10`.
    """
    folder = _cifar_dir(root, "cifar-100-python", "train", "cifar100")
    train = _cifar_batch(folder / "train", b"fine_labels")
    test = _cifar_batch(_require(folder / "test", "cifar100"), b"fine_labels")
    return _with_val("cifar100", 100, train, test, val_size, seed, limit)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format; gzipped when the name ends in ``.gz``) as uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def _idx_file(root: Path, stem: str, label: str) -> Path:
    """Find ``stem`` or ``stem.gz`` in root or torchvision's ``<Name>/raw`` layout."""
    raw = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[label]
    for folder in (root, root / raw / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"{label}: expected {stem} or {stem}.gz (IDX format) in {root}")


def _load_idx_dataset(
    label: str, root: str | Path, seed: int, val_size: int, limit: int | None
) -> DatasetSplits:
    root = Path(root).expanduser()
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte", label))
        y = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte", label))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{label}: {split} images {x.shape} and labels {y.shape} disagree")
        arrays[split] = (x[:, None], y.astype(np.int64))
    return _with_val(label, 10, arrays["train"], arrays["test"], val_size, seed, limit)


def load_mnist(
    root: str | Path, seed: int = 0, val_size: int = 5000, limit: int | None = None
) -> DatasetSplits:
    """MNIST from the four IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``) in root.

    Parameters are as for :func:`load_cifar10`.
    """
    return _load_idx_dataset("mnist", root, seed, val_size, limit)


def load_fashion_mnist(
    root: str | Path, seed: int = 0, val_size: int = 5000, limit: int | None = None
) -> DatasetSplits:
    """Fashion-MNIST from its four IDX files, named as MNIST's. Parameters as for MNIST."""
    return _load_idx_dataset("fashion_mnist", root, seed, val_size, limit)


def get_dataset(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    val_size: int = 5000,
) -> DatasetSplits:
    """Load a dataset by name.

    Parameters
    ----------
    name
        One of ``DATASET_NAMES``.
    data_dir
        Directory with the dataset's files; unused for ``"digits"``, required otherwise.
    seed
        Seed of the validation (and, for digits, test) split.
    limit
        Keep only the first ``limit`` images of each split.
    val_size
        Validation images carved from the training set (ignored for digits, split 60/20/20).
    """
    if name == "digits":
        return load_digits(seed=seed, limit=limit)
    loaders = {
        "cifar10": load_cifar10,
        "cifar100": load_cifar100,
        "mnist": load_mnist,
        "fashion_mnist": load_fashion_mnist,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
    if data_dir is None:
        raise ValueError(f"{name}: needs data_dir, the directory holding its files")
    return loaders[name](data_dir, seed=seed, val_size=val_size, limit=limit)
