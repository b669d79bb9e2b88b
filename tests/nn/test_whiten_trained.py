"""A small CNN trained briefly on scikit-learn's digits, compressed at a quarter of its
parameters with and without data: the data-aware (whitened) decompositions keep more of the
test accuracy (svd and tucker2)."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import tensornet.nn as tnn


@pytest.mark.slow
def test_a_trained_cnn_on_digits_keeps_more_accuracy_with_data():
    from models import build_model
    from studies.common.data import load_digits
    from studies.common.training import evaluate, train

    data = load_digits(seed=0)
    torch.manual_seed(0)
    net = build_model("vanilla_cnn", 1, 10, 8, widths=(16, 16, 32, 32))
    train(net, data, epochs=10, progress=False)
    net.eval()
    calib = DataLoader(TensorDataset(data.train.tensors[0][:256]), batch_size=128)
    dense = evaluate(net, data.test)
    accuracy = {}
    for fmt in ("svd", "tucker2"):
        plain, _ = tnn.compress(net, fmt, fraction=0.25)
        white, _ = tnn.compress(net, fmt, fraction=0.25, data=calib)
        accuracy[fmt] = (evaluate(plain, data.test), evaluate(white, data.test))
    print("dense", dense, "plain / with data", accuracy)
    assert dense > 0.9
    for plain_acc, white_acc in accuracy.values():
        assert white_acc > plain_acc
