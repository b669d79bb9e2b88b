"""Training, evaluation and checkpoints on a small digits subset with a narrow vanilla CNN."""

import dataclasses
import time

import numpy as np
import pytest
import torch

import studies.common.checkpoints as checkpoints
from models import build_model
from studies.common.checkpoints import config_key, load_checkpoint, save_checkpoint, train_or_load
from studies.common.data import load_digits
from studies.common.training import evaluate, train

WIDTHS = (8, 8, 16, 16)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, limit=400)


def small_model(seed=0, widths=WIDTHS):
    torch.manual_seed(seed)
    return build_model("vanilla_cnn", 1, 10, 8, widths=widths)


def test_training_beats_chance_and_reports_each_epoch(digits, capsys):
    model = small_model()
    before = evaluate(model, digits.test)
    history = train(model, digits, epochs=2, lr=1e-2, batch_size=32, progress=None)
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == {"epoch", "train_loss", "train_accuracy", "val_accuracy", "seconds"}
    assert history[1]["train_loss"] < history[0]["train_loss"]
    after = evaluate(model, digits.test)
    assert after > 0.4 and after > before  # chance is 0.1
    assert capsys.readouterr().err == ""  # no progress bar when stdout is not a terminal


def test_training_is_deterministic_given_the_seed(digits):
    states = []
    for seed in (0, 0, 1):
        model = small_model()
        train(model, digits, epochs=1, batch_size=32, seed=seed, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["conv1.weight"], states[2]["conv1.weight"])


def test_sgd_and_bad_optimizer(digits):
    model = small_model()
    history = train(model, digits, epochs=1, lr=0.05, optimizer="sgd", progress=False)
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))
    with pytest.raises(ValueError, match="optimizer"):
        train(model, digits, epochs=1, optimizer="lbfgs")


def test_evaluate_restores_mode_and_needs_no_grad(digits):
    model = small_model()
    for mode in (True, False):
        model.train(mode)
        accuracy = evaluate(model, digits.val, batch_size=64)
        assert 0.0 <= accuracy <= 1.0 and model.training is mode
    subset = torch.utils.data.Subset(digits.val, range(50))  # any Dataset, not just tensors
    assert evaluate(model, subset) == evaluate(
        model, torch.utils.data.TensorDataset(*(t[:50] for t in digits.val.tensors))
    )


def test_config_key_is_stable_and_order_free():
    a = config_key({"model": "vanilla_cnn", "epochs": 3, "lr": 1e-3})
    assert a == config_key({"lr": 1e-3, "epochs": 3, "model": "vanilla_cnn"})
    assert len(a) == 12 and a != config_key({"model": "vanilla_cnn", "epochs": 4, "lr": 1e-3})


def test_checkpoint_round_trip(tmp_path, digits):
    model = small_model(seed=0)
    path = tmp_path / "sub" / "m.safetensors"
    meta = {"config": {"model": "vanilla_cnn", "widths": list(WIDTHS)}, "test_accuracy": 0.25}
    save_checkpoint(model, path, meta)
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temp file left
    other = small_model(seed=1)
    assert load_checkpoint(other, path) == meta
    x = digits.test.tensors[0][:16]
    assert torch.equal(model(x), other(x))
    with pytest.raises(RuntimeError):  # strict: shapes must match
        load_checkpoint(small_model(widths=(4, 8, 16, 16)), path)


def test_train_or_load_reuses_the_checkpoint(tmp_path, digits, monkeypatch):
    config = {"model": "vanilla_cnn", "widths": list(WIDTHS)}
    kwargs = {"epochs": 1, "batch_size": 32, "seed": 0, "progress": False}
    model, meta, reused = train_or_load(small_model, config, digits, tmp_path, kwargs)
    assert not reused and not model.training
    assert (tmp_path / f"vanilla_cnn-{meta['key']}.safetensors").is_file()
    assert meta["config"] == config and meta["test_accuracy"] == evaluate(model, digits.test)

    def no_training(*args, **kw):
        raise AssertionError("train() called although a checkpoint exists")

    monkeypatch.setattr(checkpoints, "train", no_training)
    again, meta2, reused2 = train_or_load(
        small_model, config, digits, tmp_path,
        {**kwargs, "progress": True, "device": "cpu", "log": print},
    )  # fmt: skip
    assert reused2 and meta2 == meta
    x = digits.test.tensors[0][:16]
    assert torch.equal(model(x), again(x))
    with pytest.raises(AssertionError, match="train"):  # other settings, other checkpoint
        train_or_load(small_model, config, digits, tmp_path, {**kwargs, "epochs": 2})


# -- the values of an epoch ------------------------------------------------------------------------


def linear_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_epoch_loss_and_accuracy_are_means_over_the_training_images(digits):
    """With lr 0 the weights stay put: the epoch's numbers are the model's on the whole set."""
    model = linear_model()
    x, y = digits.train.tensors
    with torch.no_grad():
        logits = model(x)
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    accuracy = float((logits.argmax(dim=1) == y).double().mean())
    start = time.perf_counter()
    history = train(model, digits, epochs=2, lr=0.0, batch_size=48, optimizer="sgd",
                    progress=False)  # fmt: skip
    wall = time.perf_counter() - start
    for row in history:  # 400 images in batches of 48: the last batch is smaller
        assert row["train_loss"] == pytest.approx(loss, rel=1e-5)
        assert row["train_accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert row["val_accuracy"] == evaluate(model, digits.val)
        assert 0 < row["seconds"] <= wall
    assert 0.05 < accuracy < 0.5  # an untrained model: the numbers are not trivial


def test_an_epoch_of_one_image(digits):
    one = dataclasses.replace(
        digits, train=torch.utils.data.TensorDataset(*(t[:1] for t in digits.train.tensors))
    )
    model = linear_model()
    x, y = one.train.tensors
    with torch.no_grad():
        logits = model(x)
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    row = train(model, one, epochs=1, lr=0.0, optimizer="sgd", progress=False)[0]
    assert row["train_loss"] == pytest.approx(loss, rel=1e-6)
    assert row["train_accuracy"] == float(logits.argmax(dim=1)[0] == y[0])
    hit = torch.utils.data.TensorDataset(x, logits.argmax(dim=1))  # labelled as predicted
    row = train(model, dataclasses.replace(one, train=hit), epochs=1, lr=0.0, optimizer="sgd",
                progress=False)[0]  # fmt: skip
    assert row["train_accuracy"] == 1.0


def test_the_defaults_are_the_documented_values(digits):
    states = []
    for kwargs in (
        {},
        {"lr": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0, "seed": 0},
        {"optimizer": "sgd"},
        {"optimizer": "sgd", "momentum": 0.9, "lr": 1e-3},
    ):
        model = linear_model()
        train(model, digits, epochs=1, progress=False, **kwargs)
        states.append(model.state_dict())
    for a, b in ((0, 1), (2, 3)):
        assert all(torch.equal(states[a][k], states[b][k]) for k in states[a])


def test_split_scores_are_the_splits_accuracies_and_the_packed_test_correctness():
    from studies.common.data import get_dataset
    from studies.common.training import correct, evaluate, split_scores, unpack_correct

    data = get_dataset("digits", seed=0, limit=200)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    got = split_scores(model, data)
    hits = correct(model, data.test)
    assert got["val_accuracy"] == evaluate(model, data.val)
    assert got["test_accuracy"] == float(hits.mean()) == evaluate(model, data.test)
    assert np.array_equal(unpack_correct(got["test_correct"]), hits.astype(float))
    assert got["val_accuracy"] != got["test_accuracy"]  # each split its own
