"""The arguments every study takes (add_run_arguments) and their joint checks."""

import argparse

import pytest
import torch

from studies.common import cli

DATASETS = ["digits", "mnist5k", "mnist"]
BUNDLED = ("digits", "mnist5k")


def parser(**kwargs):
    p = cli.OneLineParser(prog="demo")
    cli.add_run_arguments(p, DATASETS, **kwargs)
    return p


def help_text(p):
    return " ".join(p.format_help().split())


def test_defaults():
    a = parser(val_size=True).parse_args([])
    assert vars(a) == {
        "dataset": "digits", "data_dir": None, "limit": None, "val_size": None, "seed": 0,
        "seeds": 1, "device": "cuda" if torch.cuda.is_available() else "cpu", "out": None,
        "workers": None, "scheduler": None,
    }  # fmt: skip
    assert "val_size" not in vars(parser().parse_args([]))


def test_device_defaults_to_cuda_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parser().parse_args([]).device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parser().parse_args([]).device == "cpu"


def test_values_are_typed():
    argv = [
        "--dataset", "mnist", "--data-dir", "d", "--limit", "3", "--val-size", "0.5",
        "--seed", "2", "--seeds", "4", "--device", "cpu", "--out", "o", "--workers", "2",
        "--scheduler", "tcp://h:1",
    ]  # fmt: skip
    a = parser(val_size=True).parse_args(argv)
    assert vars(a) == {
        "dataset": "mnist", "data_dir": "d", "limit": 3, "val_size": 0.5, "seed": 2,
        "seeds": 4, "device": "cpu", "out": "o", "workers": 2, "scheduler": "tcp://h:1",
    }  # fmt: skip
    assert parser(val_size=True).parse_args(["--val-size", "12"]).val_size == 12


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
        (["--limit", "0"], "argument --limit: must be an integer >= 1, got '0'"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
        (["--seeds", "0"], "argument --seeds: must be an integer >= 1, got '0'"),
        (["--workers", "0"], "argument --workers: must be an integer >= 1, got '0'"),
        (["--device", "xpu"], "argument --device: unsupported device 'xpu'"),
        (["--val-size", "2.5"], "argument --val-size: must be a count of images"),
    ],
)
def test_bad_values_are_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        parser(val_size=True).parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and fragment in err


def test_help_documents_every_option():
    text = help_text(parser(default_out="runs/x", val_size=True))
    for phrase in [
        "--dataset {digits,mnist5k,mnist}",
        "--data-dir DATA_DIR folder with the dataset's standard files (not for the bundled "
        "datasets)",
        "--limit LIMIT use at most this many images per split",
        "--val-size N|F validation images carved from the training files of "
        "cifar10/cifar100/mnist/fashion_mnist: a count or a fraction (default 0.1); the bundled "
        "datasets are split 60/20/20",
        "--seed SEED first seed (default 0)",
        "--seeds SEEDS repeat everything with this many seeds (seed, seed+1, ...): mean and spread",
        "--out OUT output folder (default runs/x)",
        "--workers WORKERS run the parallel part on a local Dask cluster of N worker processes",
        "--scheduler ADDRESS run the parallel part on a running Dask scheduler, e.g. "
        "tcp://host:8786",
    ]:
        assert phrase in text, phrase
    plain = help_text(parser())
    assert "--out OUT output folder (default runs/STUDY-DATASET-MODEL)" in plain
    assert "--val-size" not in plain


def check(argv, default_out="runs/default", val_size=True):
    p = parser(val_size=val_size)
    a = p.parse_args(argv)
    return cli.check_run_arguments(p, a, BUNDLED, default_out), a


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "2", "--scheduler", "tcp://h:1"],
         "give --workers (a local cluster) or --scheduler (a running one), not both"),
        (["--data-dir", "d"], "--data-dir is not used with --dataset digits (it is bundled)"),
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir, the folder holding its files"),
        (["--dataset", "mnist5k", "--val-size", "9"],
         "--val-size is not used with --dataset mnist5k (bundled, split 60/20/20)"),
        (["--out", "FILE"], "--out FILE: exists and is not a folder"),
    ],
)  # fmt: skip
def test_joint_checks_are_one_line(argv, message, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    argv = [str(file) if arg == "FILE" else arg for arg in argv]
    with pytest.raises(SystemExit) as stop:
        check(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == f"demo: error: {message.replace('FILE', str(file))} (see --help)\n"


def test_joint_checks_pass_and_fill_in_the_defaults(tmp_path):
    assert check(["--workers", "2"])[0] == "runs/default"
    assert check(["--scheduler", "tcp://h:1", "--out", str(tmp_path)])[0] == str(tmp_path)
    out, a = check(["--dataset", "mnist", "--data-dir", "d"])
    assert a.val_size == 0.1  # the default fraction, for a dataset read from files
    _, a = check(["--dataset", "mnist", "--data-dir", "d", "--val-size", "40"])
    assert a.val_size == 40
    _, a = check([])
    assert a.val_size is None  # bundled: split 60/20/20
    _, a = check(["--dataset", "mnist", "--data-dir", "d"], val_size=False)
    assert not hasattr(a, "val_size")
    ns = argparse.Namespace(dataset="digits", data_dir=None, workers=None, scheduler=None, out=None)
    assert cli.check_run_arguments(parser(), ns, BUNDLED, "runs/y") == "runs/y"
    assert not hasattr(ns, "val_size")
