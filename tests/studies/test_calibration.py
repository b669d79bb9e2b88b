"""studies.common.calibration: the recalibration batches, the switch and the CLI options."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import tensornet.nn as tnn
from studies.common import cli
from studies.common.calibration import (
    CALIBRATION_BATCHES,
    add_calibration_arguments,
    calibration_batches,
    recalibrated,
)


def _train(n=50):
    return TensorDataset(torch.arange(float(n)).reshape(n, 1, 1, 1), torch.zeros(n))


def test_calibration_batches_are_a_seeded_permutations_first_images():
    train = _train()
    got = calibration_batches(train, seed=5, batch_size=8, count=3)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(5))
    assert [len(b) for b in got] == [8, 8, 8]
    assert torch.equal(torch.cat(got).flatten(), order[:24].float())
    again = calibration_batches(train, seed=5, batch_size=8, count=3)
    assert all(torch.equal(a, b) for a, b in zip(got, again))
    other = calibration_batches(train, seed=6, batch_size=8, count=3)
    assert not torch.equal(torch.cat(got), torch.cat(other))
    short = calibration_batches(_train(20), seed=0, batch_size=8, count=3)  # 20 images only
    assert [len(b) for b in short] == [8, 8, 4]
    assert sorted(torch.cat(short).flatten().tolist()) == list(map(float, range(20)))
    assert calibration_batches(train, 0, 8, 2, device="meta")[0].device.type == "meta"


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU()).train()


def test_recalibrated_recomputes_the_statistics_and_leaves_eval_mode():
    batches = [torch.randn(6, 1, 4, 4) * 3 + 1 for _ in range(2)]
    net, reference = _bn_net(), _bn_net()
    assert recalibrated(net, batches) is net and not net.training
    tnn.recalibrate_bn(reference, batches, progress=False)
    assert torch.equal(net[1].running_mean, reference[1].running_mean)
    assert torch.equal(net[1].running_var, reference[1].running_var)
    assert not torch.equal(net[1].running_mean, torch.zeros(3))


@pytest.mark.parametrize("batches", [None, []])
def test_recalibrated_without_batches_changes_nothing_but_the_mode(batches):
    net = _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrated(net, batches) is net and not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_recalibrated_model_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Conv2d(1, 2, 1)).train()
    weight = net[0].weight.clone()
    assert recalibrated(net, [torch.randn(2, 1, 3, 3)]) is net and not net.training
    assert torch.equal(net[0].weight, weight)


def test_calibration_arguments():
    p = cli.OneLineParser(prog="x")
    add_calibration_arguments(p)
    a = p.parse_args([])
    assert (a.recalibrate_bn, a.calibration_batches) == (True, CALIBRATION_BATCHES) == (True, 8)
    a = p.parse_args(["--no-recalibrate-bn", "--calibration-batches", "3"])
    assert (a.recalibrate_bn, a.calibration_batches) == (False, 3)
    with pytest.raises(SystemExit):
        p.parse_args(["--calibration-batches", "0"])
    helps = {a.dest: a.help for a in p._actions}
    assert helps["recalibrate_bn"] == (
        "score compressed models with the trained model's BatchNorm statistics"
    )
    assert helps["calibration_batches"] == (
        "training batches the BatchNorm statistics are recomputed on (default 8)"
    )


def test_recalibrated_shows_no_progress_bar(monkeypatch):
    import tensornet.nn.batchnorm as batchnorm

    seen = []
    original = batchnorm._progress
    monkeypatch.setattr(
        batchnorm, "_progress", lambda data, limit, on: seen.append(on) or original(data, limit, on)
    )
    recalibrated(_bn_net(), [torch.randn(2, 1, 3, 3)])
    assert seen == [False]
