"""Progress of training epochs and cell loops: a bar on a terminal, one line per step elsewhere."""

import re

import pytest
import torch

from models import build_model
from studies.common.data import load_digits
from studies.common.progress import Progress, duration, eta, on_terminal, print_line
from studies.common.training import epoch_line, train


def ticking(*times):
    """A fake clock returning ``times`` in turn."""
    values = iter(times)
    return lambda: next(values)


def test_duration_and_eta_values():
    assert [duration(s) for s in (0, 59.99, 60, 3599, 3600, 36000 + 61)] == [
        "0:00", "0:59", "1:00", "59:59", "1:00:00", "10:01:01",
    ]  # fmt: skip
    assert duration(-3) == "0:00"
    assert eta(3, 12, 42.0) == "cell 3/12, 0:42 elapsed, ~2:06 left"
    assert eta(1, 4, 10.0, "epoch") == "epoch 1/4, 0:10 elapsed, ~0:30 left"
    assert eta(4, 4, 10.0) == "cell 4/4, 0:10 elapsed, ~0:00 left"
    assert eta(0, 4, 10.0) == "cell 0/4, 0:10 elapsed, ~? left"


def test_lines_off_a_terminal_carry_the_time_left():
    lines = []
    clock = ticking(100.0, 110.0, 130.0, 160.0)
    with Progress(3, "cell", log=lines.append, clock=clock, terminal=False) as progress:
        assert progress.mode == "lines" and progress.bar is None
        progress.step("a")
        progress.step()
        progress.step("c", postfix={"loss": 1})
    assert lines == [
        "a  [cell 1/3, 0:10 elapsed, ~0:20 left]",
        "[cell 2/3, 0:30 elapsed, ~0:15 left]",
        "c  [cell 3/3, 1:00 elapsed, ~0:00 left]",
    ]
    assert progress.done == 3


@pytest.mark.parametrize("echo", [True, False])
def test_off_prints_only_echoed_lines(echo, capsys):
    lines = []
    with Progress(2, show=False, log=lines.append, echo=echo, terminal=True) as progress:
        progress.step("a")
        progress.step("")
    assert progress.mode == "off" and progress.bar is None
    assert lines == (["a"] if echo else [])
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("show, terminal", [(True, False), (None, True)])
def test_bar_on_a_terminal_with_lines_above_it(show, terminal, capsys):
    lines = []
    with Progress(4, "epoch", show=show, log=lines.append, terminal=terminal) as progress:
        assert progress.mode == "bar"
        progress.step("first", postfix={"loss": "0.50"})
        progress.step("second")
        bar = progress.bar
        assert (bar.n, bar.total) == (2, 4)
    assert progress.bar is None and bar.disable is True  # closed
    err = capsys.readouterr().err
    assert "epochs" in err and "2/4" in err and "loss=0.50" in err
    assert lines == ["first", "second"]  # above the bar, without a suffix


def test_bar_without_echo_keeps_lines_out(capsys):
    lines = []
    with Progress(1, show=True, log=lines.append, echo=False) as progress:
        progress.step("hidden")
    assert lines == [] and "1/1" in capsys.readouterr().err


def test_closing_early_leaves_lines_only(capsys):
    lines = []
    progress = Progress(3, show=True, log=lines.append)
    progress.close()
    progress.close()  # twice is fine
    progress.step("after")
    assert lines == ["after"] and progress.done == 1


def test_negative_total_is_refused():
    with pytest.raises(ValueError, match="total must be >= 0, got -1"):
        Progress(-1)


def test_callback_takes_the_reported_total():
    lines = []
    progress = Progress(0, "cell", log=lines.append, clock=ticking(0.0, 5.0), terminal=False)
    report = progress.callback(lambda row: f"chi {row['chi']}")
    report({"chi": 2}, 1, 5)
    assert progress.total == 5
    assert lines == ["chi 2  [cell 1/5, 0:05 elapsed, ~0:20 left]"]


def test_callback_resizes_the_bar(capsys):
    with Progress(0, show=True, log=lambda text: None) as progress:
        report = progress.callback(str)
        report({}, 1, 7)
        assert (progress.bar.n, progress.bar.total) == (1, 7)


class Stdout:
    """A stdout that records what is written and each flush."""

    def __init__(self):
        self.events = []

    def write(self, text):
        self.events.append(text)

    def flush(self):
        self.events.append("<flush>")


def test_defaults_print_to_stdout_at_once_and_detect_stderr(capsys, monkeypatch):
    print_line("hello")
    assert capsys.readouterr().out == "hello\n"
    stdout = Stdout()
    monkeypatch.setattr("sys.stdout", stdout)
    print_line("now")
    assert stdout.events == ["now", "\n", "<flush>"]
    monkeypatch.undo()
    Progress(1, terminal=False, clock=ticking(0.0, 1.0)).step("x")  # unit "cell" by default
    assert capsys.readouterr().out == "x  [cell 1/1, 0:01 elapsed, ~0:00 left]\n"
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert on_terminal() is True
    with Progress(1, "cell") as progress:
        assert progress.mode == "bar"
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert on_terminal() is False
    assert Progress(1).mode == "lines"


# -- training -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, limit=120)


def small_model():
    torch.manual_seed(0)
    return build_model("vanilla_cnn", 1, 10, 8, widths=(4, 4, 8, 8))


def test_training_prints_one_line_per_epoch_off_a_terminal(digits, capsys):
    lines = []
    history = train(small_model(), digits, epochs=3, batch_size=32, log=lines.append)
    assert len(lines) == 3
    for i, (line, row) in enumerate(zip(lines, history), start=1):
        assert line.startswith(epoch_line(row) + f"  [epoch {i}/3, ")
        assert line.endswith(" left]")
    assert capsys.readouterr() == ("", "")
    train(small_model(), digits, epochs=1, batch_size=32)  # default log: stdout
    out = capsys.readouterr().out
    assert out.startswith("train: loss ") and "[epoch 1/1, " in out


def test_training_silent_or_with_a_bar(digits, capsys):
    lines = []
    train(small_model(), digits, epochs=2, batch_size=32, progress=False, log=lines.append)
    assert lines == [] and capsys.readouterr() == ("", "")
    train(small_model(), digits, epochs=2, batch_size=32, progress=True, log=lines.append)
    err = capsys.readouterr().err
    assert lines == [] and "2/2" in err and "epochs" in err
    assert re.search(r"loss=\d\.\d{4}, val=\d\.\d{4}", err)


def test_epoch_line_values():
    row = {"train_loss": 1.23456, "train_accuracy": 0.5, "val_accuracy": 0.25, "seconds": 12.34}
    assert epoch_line(row) == (
        "train: loss 1.2346, train accuracy 0.5000, val accuracy 0.2500 (12.3 s)"
    )


def test_cell_lines_of_the_studies():
    from studies.approx_error import cell_line
    from studies.truncation import sweep_line

    row = {
        "layer": "features.3",
        "method": "cp",
        "fraction": 0.5,
        "repeat": 2,
        "weight_rel": 0.12345,
        "test_before": 0.25,
        "test_after": 0.875,
        "seconds": 61.25,
    }
    assert cell_line(row) == (
        "  features.3 cp 0.5 #2: weight error 0.123, test 0.2500 -> 0.8750 (61.2 s)"
    )
    row = {
        "layer": "conv2",
        "cut": "out,kh|in,kw",
        "chi": 16,
        "rel_error": 0.0625,
        "val_accuracy": 0.5,
        "test_accuracy": 0.75,
    }
    assert sweep_line(row) == (
        "  conv2 out,kh|in,kw chi 16: error 0.062, val 0.5000, test 0.7500"
    )  # fmt: skip
