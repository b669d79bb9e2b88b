import csv
import runpy
import sys

import pytest
import torch
from safetensors.torch import save_file

import tensornet as tn
from tensornet.cli import main

PNGS = ("bond_spectra.png", "entropy_heatmap.png", "truncation_curves.png")


class Opaque:
    """Not a tensor: a weights-only load must refuse to unpickle it."""


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 4),
    )
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(params=["pt", "safetensors"])
def checkpoint(request, tmp_path, state_dict):
    path = tmp_path / f"tiny.{request.param}"
    if request.param == "pt":
        torch.save(state_dict, path)
    else:
        save_file(state_dict, str(path))
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_spectra_end_to_end(checkpoint, tmp_path, state_dict, capsys):
    out = tmp_path / "out"
    plots = checkpoint.suffix == ".pt"  # the figures do not depend on the file format
    argv = ["spectra", str(checkpoint), "--out", str(out), "--chi", "3"]
    assert main(argv + ([] if plots else ["--no-plots"])) == 0
    rows = read_csv(out / "spectra.csv")
    expected = tn.weight_spectra(state_dict)
    assert len(rows) == 7 + 7 + 1 == len(expected)  # every cut of two conv kernels, one linear
    for row in rows:
        sp = expected.get(row["layer"], row["cut"])
        assert float(row["entropy"]) == pytest.approx(sp.entropy(), abs=1e-9)
        assert int(row["chi_max"]) == sp.chi_max
    for name in PNGS:
        if plots:
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        else:
            assert not (out / name).exists()
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].split() == [
        "layer", "shape", "lowest-entropy", "cut", "S", "min", "S", "max", "eff.", "rank",
        "err@chi=3",
    ]
    by_layer = {line.split()[0]: line.split() for line in lines[2:5]}
    assert set(by_layer) == {"0", "3", "5"}
    assert by_layer["0"][1] == "8x3x3x3" and by_layer["5"][1] == "4x6"
    entropies = [sp.entropy() for sp in expected if sp.name == "3"]
    assert float(by_layer["3"][3]) == pytest.approx(min(entropies), abs=1e-3)
    assert float(by_layer["3"][4]) == pytest.approx(max(entropies), abs=1e-3)
    assert "3 layers, 15 cuts; wrote" in captured.out


def test_layer_pattern_nested_state_dict_and_default_out(tmp_path, state_dict, monkeypatch,
                                                         capsys):
    path = tmp_path / "run.ckpt"
    torch.save({"epoch": 4, "model_state_dict": state_dict, "lr": 0.1}, path)
    monkeypatch.chdir(tmp_path)
    assert main(["spectra", str(path), "--layers", "[03]", "--no-plots"]) == 0
    rows = read_csv(tmp_path / "spectra-run" / "spectra.csv")
    assert {row["layer"] for row in rows} == {"0", "3"} and len(rows) == 14
    assert sorted(p.name for p in (tmp_path / "spectra-run").iterdir()) == ["spectra.csv"]
    assert "err@chi" not in capsys.readouterr().out


def test_python_dash_m_runs_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tensornet", "spectra", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("tensornet", run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage: tensornet spectra" in capsys.readouterr().out


def write_garbage(path):
    path.write_bytes(b"definitely not a checkpoint\n" * 10)


ERRORS = {
    "missing": (lambda p: None, "no such file"),
    "garbage": (write_garbage, "not a PyTorch checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "not a PyTorch checkpoint"),
    "pickled object": (lambda p: torch.save({"w": Opaque()}, p), "refusing to unpickle"),
    "tensor": (lambda p: torch.save(torch.ones(3), p), "holds a Tensor, not a state_dict"),
    "no tensors": (lambda p: torch.save({"epoch": 3}, p), "holds no tensors"),
    "only biases": (lambda p: torch.save({"b": torch.ones(3)}, p), "no weight with 2-5 dim"),
    "NaN weights": (
        lambda p: torch.save({"conv.weight": torch.full((4, 3, 3, 3), float("nan"))}, p),
        "weight 'conv' holds NaN or inf values (108 of 108 entries)",
    ),
    "inf weight": (
        lambda p: torch.save({"fc.weight": torch.tensor([[1.0, float("inf")]])}, p),
        "weight 'fc' holds NaN or inf values (1 of 2 entries)",
    ),
    "colliding names": (
        lambda p: torch.save({"fc.weight": torch.ones(2, 3), "fc": torch.ones(2, 3)}, p),
        "weights 'fc.weight' and 'fc' would both be layer 'fc'",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_checkpoints_exit_2_with_one_line(case, tmp_path, capsys):
    make, message = ERRORS[case]
    path = tmp_path / "bad.pt"
    make(path)
    assert main(["spectra", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tensornet: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_corrupt_safetensors_and_bad_patterns(tmp_path, checkpoint, capsys):
    bad = tmp_path / "bad.safetensors"
    write_garbage(bad)
    for argv, message in [
        (["spectra", str(bad)], "cannot read"),
        (["spectra", str(checkpoint), "--layers", "nothing*"], "no weight matching 'nothing*'"),
        (["spectra", str(checkpoint), "--layers", "conv["], "no weight matching 'conv['"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("tensornet: error: ") and message in err and err.count("\n") == 1


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["spectra", "x.pt", "--chi", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


class RunsCode:
    """Unpickling this would run ``os.system``; the CLI must refuse it and run nothing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def pickled_with_torch(path, marker):
    torch.save({"w": torch.ones(2, 2), "evil": RunsCode(marker)}, path)


def pickled_with_torch_legacy(path, marker):
    torch.save({"evil": RunsCode(marker)}, path, _use_new_zipfile_serialization=False)


def pickled_plain(path, marker, protocol):
    import pickle

    with open(path, "wb") as f:
        pickle.dump({"w": RunsCode(marker)}, f, protocol=protocol)


@pytest.mark.parametrize(
    "write",
    [
        pickled_with_torch,
        pickled_with_torch_legacy,
        lambda p, m: pickled_plain(p, m, 2),
        lambda p, m: pickled_plain(p, m, 4),
    ],
    ids=["torch.save", "torch.save legacy", "pickle protocol 2", "pickle protocol 4"],
)
def test_pickled_code_is_refused_as_such_and_never_runs(write, tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    write(path, marker)
    assert main(["spectra", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # no warnings, no traceback
    assert "contains pickled Python objects (posix.system)" in err or "(nt.system)" in err
    assert "refusing to unpickle" in err and "corrupt" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_non_regular_files_are_refused_without_blocking(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)  # opening a FIFO for reading blocks until a writer appears
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    for path, kind in [(fifo, "a FIFO"), (folder, "a directory")]:
        assert main(["spectra", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is {kind}" in err and "refused" in err
    assert not (tmp_path / "out").exists()


def test_safetensors_tensors_keep_their_saved_order(tmp_path, capsys):
    from tensornet.cli import load_state_dict

    weights = {
        f"layer{i}.weight": torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(i))
        for i in (2, 10, 1, 3)
    }
    plain = tmp_path / "plain.safetensors"
    save_file(weights, str(plain))  # safetensors stores them sorted by dtype and name
    assert list(load_state_dict(plain)) == [f"layer{i}.weight" for i in (1, 2, 3, 10)]
    recorded = tmp_path / "recorded.safetensors"
    import json

    save_file(weights, str(recorded), metadata={"order": json.dumps(list(weights))})
    state = load_state_dict(recorded)
    assert list(state) == list(weights)  # the writer's order, kept in the metadata
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert main(["spectra", str(recorded), "--no-plots", "--out", str(tmp_path / "o")]) == 0
    rows = [r["layer"] for r in read_csv(tmp_path / "o" / "spectra.csv")]
    assert list(dict.fromkeys(rows)) == ["layer2", "layer10", "layer1", "layer3"]
    summary = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:6]]
    assert summary == ["layer2", "layer10", "layer1", "layer3"]


def test_study_checkpoints_record_their_order(tmp_path):
    from studies.common.checkpoints import read_metadata, save_checkpoint
    from tensornet.cli import load_state_dict

    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(12)])
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, {"epochs": 1})
    assert list(load_state_dict(path)) == list(model.state_dict())  # 0, 1, ..., 10, 11
    assert read_metadata(path) == {"epochs": 1}
