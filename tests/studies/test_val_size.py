"""--val-size: a count or a fraction of a file dataset's training images, in the training key."""

import argparse
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from studies import alds, approx_error, hybrid, truncation
from studies.common import cli
from studies.common.checkpoints import checkpoint_path
from studies.common.data import (
    DEFAULT_VAL_SIZE,
    DataError,
    check_val_size,
    get_dataset,
    load_cifar10,
    val_count,
    val_size_key,
)

STUDIES = {"alds": alds, "approx_error": approx_error, "hybrid": hybrid, "truncation": truncation}


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, n_train, n_test=10, size=8, seed=0):
    """Tiny MNIST-format files (small images keep a 3,000-image set quick)."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


@pytest.fixture(scope="module")
def mnist3k(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist3k"), 3000)


def sizes(data):
    return len(data.train), len(data.val), len(data.test)


# -- the count ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "val_size, n_train, count",
    [
        (0.1, 3000, 300),
        (0.1, 50000, 5000),  # CIFAR's previous fixed 5,000
        (0.25, 40, 10),
        (0.26, 40, 10),  # rounded to the nearest count
        (0.29, 40, 12),
        (0.001, 20, 1),  # at least one image
        (500, 3000, 500),
        (1, 30, 1),
        (2999, 3000, 2999),
        (np.int64(7), 30, 7),
        (np.float32(0.5), 30, 15),
    ],
)
def test_val_count(val_size, n_train, count):
    got = val_count(val_size, n_train)
    assert got == count and type(got) is int


@pytest.mark.parametrize("val_size, taken", [(3000, 3000), (5000, 5000), (0.9999, 3000)])
def test_a_split_that_leaves_no_training_image_is_refused(val_size, taken):
    with pytest.raises(DataError) as err:
        val_count(val_size, 3000, "mnist")
    assert str(err.value) == (
        f"mnist: --val-size {val_size:g} takes {taken} of the 3000 training images and leaves "
        "none to train on; give a smaller count or a fraction such as 0.1"
    )


@pytest.mark.parametrize(
    "bad", [0, -1, 0.0, 1.0, 1.5, -0.5, float("nan"), float("inf"), True, "0.1", None]
)
def test_what_is_neither_a_count_nor_a_fraction_is_refused(bad):
    message = f"--val-size must be a count >= 1 or a fraction between 0 and 1, got {bad!r}"
    with pytest.raises(ValueError) as err:
        check_val_size(bad)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        val_count(bad, 100)
    assert str(err.value) == message


def test_errors_name_the_dataset():
    with pytest.raises(DataError, match=r"^dataset: --val-size 5 takes 5 of the 5 training"):
        val_count(5, 5)


def test_val_size_key():
    assert val_size_key(None) == {}
    assert val_size_key(0.2) == {"val_size": 0.2} and val_size_key(7) == {"val_size": 7}
    assert DEFAULT_VAL_SIZE == 0.1


# -- the split ------------------------------------------------------------------------------------


def test_split_sizes_for_a_count_a_fraction_and_the_default(tmp_path):
    write_mnist(tmp_path, 40)
    assert sizes(get_dataset("mnist", tmp_path, val_size=7)) == (33, 7, 10)
    assert sizes(get_dataset("fashion_mnist", tmp_path, val_size=0.25)) == (30, 10, 10)
    data = get_dataset("mnist", tmp_path)
    assert sizes(data) == (36, 4, 10)
    union = torch.cat([data.train.tensors[1], data.val.tensors[1]]).sort().values
    assert union.tolist() == sorted(list(range(10)) * 4)  # nothing lost, nothing doubled


def test_a_fraction_gives_the_same_split_as_its_count(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(8, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": [i % 4 for i in range(8)]}, f)
    by_count, by_fraction = load_cifar10(folder, val_size=4), load_cifar10(folder, val_size=0.1)
    assert sizes(by_count) == sizes(by_fraction) == (36, 4, 8)
    for a, b in zip(by_count.val.tensors, by_fraction.val.tensors):
        assert torch.equal(a, b)
    assert sizes(get_dataset("cifar10", tmp_path)) == (36, 4, 8)  # default 0.1


def test_a_3000_image_file_set_now_works(mnist3k):
    data = get_dataset("mnist", mnist3k, seed=1)
    assert sizes(data) == (2700, 300, 10)
    counts = np.bincount(data.val.tensors[1].numpy(), minlength=10)
    assert counts.tolist() == [30] * 10  # stratified
    with pytest.raises(DataError, match=r"--val-size 5000 takes 5000 of the 3000 training"):
        get_dataset("mnist", mnist3k, val_size=5000)  # the old fixed size


def test_seed_and_limit_reach_every_loader(tmp_path):
    from studies.common.data import load_digits, load_mnist5k

    write_mnist(tmp_path, 40)
    for data, same in [
        (get_dataset("digits", seed=3, limit=50), load_digits(seed=3, limit=50)),
        (get_dataset("digits"), load_digits(seed=0)),
        (get_dataset("mnist5k", seed=2, limit=40), load_mnist5k(seed=2, limit=40)),
        (get_dataset("mnist", tmp_path, seed=5, limit=3), None),
    ]:
        if same is not None:
            assert sizes(data) == sizes(same)
            for a, b in zip(data.train.tensors, same.train.tensors):
                assert torch.equal(a, b)
    assert sizes(data) == (3, 3, 3)
    labels = [get_dataset("mnist", tmp_path, seed=s).val.tensors[1].tolist() for s in (0, 0, 1)]
    assert labels[0] == labels[1] != labels[2]


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError) as err:
        get_dataset("svhn")
    assert str(err.value) == (
        "unknown dataset 'svhn'; choose from digits, mnist5k, cifar10, cifar100, mnist, "
        "fashion_mnist"
    )


def test_get_dataset_refuses_val_size_for_the_bundled_datasets():
    with pytest.raises(ValueError, match=r"--val-size is not used with digits \(bundled"):
        get_dataset("digits", val_size=0.2)
    with pytest.raises(ValueError, match="--val-size must be a count"):
        get_dataset("mnist", "nowhere", val_size=0)


# -- the command line and the training key --------------------------------------------------------


@pytest.mark.parametrize("text, value", [("500", 500), ("1", 1), ("0.1", 0.1), (" 0.5", 0.5)])
def test_count_or_fraction(text, value):
    got = cli.count_or_fraction(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["0", "-3", "1.0", "0.0", "1e3", "nan", "inf", "x", ""])
def test_count_or_fraction_refusals(text):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli.count_or_fraction(text)
    assert str(err.value) == (
        f"must be a count of images (an integer >= 1) or a fraction between 0 and 1, got {text!r}"
    )


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_val_size_enters_the_training_key(name, mnist3k, tmp_path):
    study = STUDIES[name]
    base = ["--dataset", "mnist", "--data-dir", str(mnist3k), "--out", str(tmp_path / "o")]
    default, count = study.parse_args(base), study.parse_args([*base, "--val-size", "250"])
    assert (default.val_size, count.val_size) == (0.1, 250)
    assert default.training(0)["val_size"] == 0.1 and count.training(0)["val_size"] == 250
    header = getattr(count, "cells", None) or count.sweep
    assert header(0)["val_size"] == 250  # the results file's header too
    data = study.Study(count)._default_load(0)
    assert sizes(data) == (2750, 250, 10)
    paths = {
        checkpoint_path(cfg.training(0), data, tmp_path, {"epochs": 1})[0]
        for cfg in (default, count)
    }
    assert len(paths) == 2  # same data, another split setting: another checkpoint
    digits = study.parse_args(["--out", str(tmp_path / "d")])
    assert digits.val_size is None and "val_size" not in digits.training(0)


@pytest.mark.parametrize("name", sorted(STUDIES))
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--data-dir", "MNIST", "--val-size", "1.5"], "--val-size: must be a count of images"),
        (["--dataset", "digits", "--val-size", "0.2"], "--val-size is not used with --dataset"),
        (["--dataset", "mnist5k", "--val-size", "9"], "--val-size is not used with --dataset"),
    ],
)
def test_bad_val_size_is_one_line_exit_2(name, extra, fragment, tmp_path, mnist3k, capsys):
    out = tmp_path / "out"
    argv = ["--dataset", "mnist", "--out", str(out)]
    argv += [str(mnist3k) if arg == "MNIST" else arg for arg in extra]
    assert STUDIES[name].main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and not out.exists()


def test_a_split_that_does_not_fit_stops_the_study_before_any_work(mnist3k, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--dataset", "mnist", "--data-dir", str(mnist3k), "--out", str(out)]
    assert truncation.main([*argv, "--val-size", "3000"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "python -m studies truncation: error: mnist: --val-size 3000 takes 3000 of the 3000 "
        "training images and leaves none to train on; give a smaller count or a fraction such "
        "as 0.1\n"
    )
    assert not out.exists()


def test_the_driver_loads_each_seed_with_the_limit_and_the_split(mnist3k, tmp_path):
    from types import SimpleNamespace

    from studies.common.study import StudyDriver

    common = {"out": str(tmp_path), "seed": 0, "seeds": 1, "dataset": "mnist"}
    cfg = SimpleNamespace(**common, data_dir=str(mnist3k), limit=100, val_size=0.2)
    got = StudyDriver(cfg)._default_load(1)
    want = get_dataset("mnist", mnist3k, seed=1, limit=100, val_size=0.2)
    assert sizes(got) == (100, 100, 10)
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(got, split).tensors, getattr(want, split).tensors):
            assert torch.equal(a, b)
    other = StudyDriver(cfg)._default_load(2)
    assert not torch.equal(other.val.tensors[1], got.val.tensors[1])
    old = SimpleNamespace(**common, data_dir=str(mnist3k), limit=None)  # no val_size: default
    assert sizes(StudyDriver(old)._default_load(0)) == (2700, 300, 10)
