import csv
import math
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
        "layer", "shape", "cut", "of", "lowest", "S/log(chi_max)", "chi_max", "S/log(chi_max)",
        "S", "min", "S", "max", "eff.", "rank", "err@chi=3",
    ]
    by_layer = {line.split()[0]: line.split() for line in lines[2:5]}
    assert set(by_layer) == {"0", "3", "5"}
    assert by_layer["0"][1] == "8x3x3x3" and by_layer["5"][1] == "4x6"
    entropies = [sp.entropy() for sp in expected if sp.name == "3"]
    assert float(by_layer["3"][5]) == pytest.approx(min(entropies), abs=1e-3)
    assert float(by_layer["3"][6]) == pytest.approx(max(entropies), abs=1e-3)
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


# -- the summary: cuts compared by normalised entropy ----------------------------------------
def low_rank_kernel(out=16, cin=3):
    """``(out, in, 3, 3)``, exactly rank 2 along out|in,kh,kw, with kh scaled by 1, 0.3, 0.1.

    The size-3 kh leg then has the lowest raw entropy (its values fall fast, but it has only 3)
    while out|in,kh,kw, rank 2 of 16, is the low-rank cut.
    """
    g = torch.Generator().manual_seed(0)
    a, _ = torch.linalg.qr(torch.randn(out, 2, generator=g, dtype=torch.float64))
    b, _ = torch.linalg.qr(torch.randn(cin * 9, 2, generator=g, dtype=torch.float64))
    w = ((a * torch.tensor([1.0, 0.5], dtype=torch.float64)) @ b.T).reshape(out, cin, 3, 3)
    return w * torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)[:, None]


def summary_rows(out):
    """Summary rows by layer, split on runs of two or more spaces (cells hold single spaces)."""
    import re

    rows = {}
    for line in out.splitlines()[2:]:
        if not line or line.startswith("("):  # the blank line, or the note under the table
            break
        row = re.split(r"\s{2,}", line.strip())
        rows[row[0]] = row
    return rows


@pytest.fixture
def mixed(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {
        "conv": low_rank_kernel(),
        "pointwise": torch.randn(8, 16, 1, 1, generator=g, dtype=torch.float64),
        "fc": torch.randn(4, 8, generator=g, dtype=torch.float64),
        "row": torch.randn(1, 5, generator=g, dtype=torch.float64),  # every cut is trivial
    }
    path = tmp_path / "mixed.safetensors"
    save_file(state, str(path))
    return path, tn.weight_spectra(state)


def run_summary(path, capsys, *extra):
    argv = ["spectra", str(path), "--no-plots", "--out", str(path.parent / "out"), *extra]
    assert main(argv) == 0
    return capsys.readouterr().out


def test_summary_picks_the_low_rank_cut_not_the_smallest_leg(mixed, capsys):
    path, table = mixed
    conv = [sp for sp in table if sp.name == "conv"]
    wide = table.get("conv", "out|in,kh,kw")
    assert wide.chi_max == 16 and float(wide.values[2] / wide.values[0]) < 1e-12  # rank 2
    raw = min(conv, key=lambda sp: sp.entropy())
    assert raw.label == "kh|out,in,kw" and raw.chi_max == 3  # what the raw-entropy pick chose
    out = run_summary(path, capsys)
    row = summary_rows(out)["conv"]
    assert row[:4] == ["conv", "16x3x3x3", "out|in,kh,kw", "16"]
    assert float(row[4]) == pytest.approx(wide.entropy() / math.log(16), abs=1e-3)
    assert float(row[4]) < min(sp.normalized_entropy() for sp in conv if sp is not wide)
    assert float(row[5]) == pytest.approx(raw.entropy(), abs=1e-3)
    assert float(row[6]) == pytest.approx(max(sp.entropy() for sp in conv), abs=1e-3)
    assert float(row[7]) == pytest.approx(math.exp(wide.entropy()), abs=1e-2)
    assert len(row) == 8  # no error column without --chi
    assert "lowest normalised entropy S/log(chi_max)" in out
    assert "trivial cuts (chi_max = 1, e.g. a size-1 leg) are left out" in out


def test_summary_never_picks_a_trivial_cut(mixed, capsys):
    path, table = mixed
    rows = summary_rows(run_summary(path, capsys))
    pointwise = [sp for sp in table if sp.name == "pointwise"]
    assert sum(sp.trivial for sp in pointwise) == 3  # kh, kw and out,in|kh,kw
    best = min((sp for sp in pointwise if not sp.trivial), key=lambda sp: sp.normalized_entropy())
    row = rows["pointwise"]
    assert row[2] == best.label and int(row[3]) == best.chi_max >= 2
    assert float(row[4]) == pytest.approx(best.normalized_entropy(), abs=1e-3)
    entropies = [sp.entropy() for sp in pointwise if not sp.trivial]
    assert float(row[5]) == pytest.approx(min(entropies), abs=1e-3) and float(row[5]) > 0.1
    assert float(row[6]) == pytest.approx(max(entropies), abs=1e-3)
    fc = table.get("fc", "out|in")
    assert rows["fc"][2:5] == ["out|in", "4", f"{fc.normalized_entropy():.3f}"]
    assert rows["row"] == ["row", "1x5", "-", "1", "-", "-", "-", "1.00"]


def test_err_at_chi_is_exact_where_chi_keeps_every_value(mixed, capsys):
    path, table = mixed
    rows = summary_rows(run_summary(path, capsys, "--chi", "4"))
    exact = "exact (chi >= chi_max)"
    conv = table.get("conv", "out|in,kh,kw")
    assert rows["conv"][-1] == f"{conv.relative_error(4):.3g}"  # 4 < 16: a value (rank 2: ~0)
    pointwise = rows["pointwise"]
    sp = table.get("pointwise", pointwise[2])
    assert pointwise[-1] == f"{sp.relative_error(4):.3g}" and sp.relative_error(4) > 0.1
    assert rows["fc"][-1] == exact and rows["row"][-1] == exact  # chi_max 4 and 1
    rows = summary_rows(run_summary(path, capsys, "--chi", "8"))
    assert rows["pointwise"][-1] == exact and rows["conv"][-1] != exact
    rows = summary_rows(run_summary(path, capsys, "--chi", "3"))
    fc = table.get("fc", "out|in")
    assert rows["fc"][-1] == f"{fc.relative_error(3):.3g}" and fc.relative_error(3) > 0.1


def test_csv_marks_trivial_cuts_and_help_states_the_normalisation(mixed, capsys):
    path, table = mixed
    run_summary(path, capsys)
    rows = read_csv(path.parent / "out" / "spectra.csv")
    for row in rows:
        sp = table.get(row["layer"], row["cut"])
        if sp.trivial:
            assert row["normalized_entropy"] == "nan"
        else:
            assert float(row["normalized_entropy"]) == pytest.approx(
                sp.entropy() / math.log(sp.chi_max), rel=1e-9
            )
    assert main(["spectra", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the cut of lowest normalised entropy S/log(chi_max)" in text
    assert "trivial cuts (chi_max = 1, e.g. the size-1 legs of a 1x1 conv) are left out" in text
    assert "or 'exact (chi >= chi_max)' where that cut has at most CHI values" in text


def test_summary_text_is_aligned_and_complete():
    from tensornet.cli import _summary
    from tensornet.core.spectrum import Spectrum
    from tensornet.spectra import SpectrumTable

    def sp(values, left, right, name):
        return Spectrum(torch.tensor(values, dtype=torch.float64), left, right, name=name)

    table = SpectrumTable([
        sp([2.0, 1.0, 1.0, 0.0], "o", "ih", "conv"),  # S/log 4 = 0.626: picked
        sp([2.0, 1.0], "i", "oh", "conv"),  # S = 0.500, the lowest raw entropy; S/log 2 = 0.722
        sp([3.0], "h", "oi", "conv"),  # trivial
        sp([2.0], "o", "i", "row"),  # trivial only
    ])
    note = (
        "(picked cut: lowest normalised entropy S/log(chi_max), 0 = rank one, 1 = flat spectrum;\n"
        " trivial cuts (chi_max = 1, e.g. a size-1 leg) are left out of the pick and of S min/max)"
    )
    assert _summary(table, {"conv": (4, 2, 1)}, 2) == "\n".join([
        "layer  shape  cut of lowest S/log(chi_max)  chi_max  S/log(chi_max)  S min  S max"
        "  eff. rank               err@chi=2",
        "-----  -----  ----------------------------  -------  --------------  -----  -----"
        "  ---------  ----------------------",
        "conv   4x2x1  o|ih                                4           0.626  0.500  0.868"
        "       2.38                   0.408",
        "row    ?      -                                   1               -      -      -"
        "       1.00  exact (chi >= chi_max)",
        note,
    ])
    assert _summary(table, {"conv": (4, 2, 1), "row": (1, 1)}) == "\n".join([
        "layer  shape  cut of lowest S/log(chi_max)  chi_max  S/log(chi_max)  S min  S max"
        "  eff. rank",
        "-----  -----  ----------------------------  -------  --------------  -----  -----"
        "  ---------",
        "conv   4x2x1  o|ih                                4           0.626  0.500  0.868"
        "       2.38",
        "row    1x1    -                                   1               -      -      -"
        "       1.00",
        note,
    ])


HELP = """\
usage: tensornet [-h] COMMAND ...

Tensor-network tools for PyTorch.

positional arguments:
  COMMAND
    spectra   entanglement spectra of every weight in a checkpoint

options:
  -h, --help  show this help message and exit
"""

SPECTRA_HELP = """\
usage: tensornet spectra [-h] [--layers PATTERN] [--out DIR] [--chi CHI] [--no-plots] CHECKPOINT

Spectrum of every cut of every 2-5 dimensional weight in a state_dict: writes spectra.csv,
bond_spectra.png, entropy_heatmap.png and truncation_curves.png to DIR, and prints a summary. In a
file written by tensornet.nn.save, each compressed layer is its kernel, rebuilt from the file's
records and factors (never the factors as layers), marked by its format and ranks. The summary
picks, per layer, the cut of lowest normalised entropy S/log(chi_max) (0: rank one, 1: flat
spectrum), so that cuts of different sizes compare fairly; trivial cuts (chi_max = 1, e.g. the
size-1 legs of a 1x1 conv) are left out of the pick (spectra.csv gives them normalized_entropy
nan).

positional arguments:
  CHECKPOINT        a .safetensors file (also one written by tensornet.nn.save), or a state_dict
                    saved with torch.save

options:
  -h, --help        show this help message and exit
  --layers PATTERN  only layers whose name matches this glob or regular expression
  --out DIR         output folder (default: ./spectra-<checkpoint stem>)
  --chi CHI         bond dimension to mark in the plots; the summary then shows the relative error
                    of keeping CHI values at each layer's picked cut, or 'exact (chi >= chi_max)'
                    where that cut has at most CHI values
  --no-plots        write only spectra.csv (much faster for large models)
"""


def test_help_text(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    assert main(["--help"]) == 0
    assert capsys.readouterr().out == HELP
    assert main(["spectra", "--help"]) == 0
    assert capsys.readouterr().out == SPECTRA_HELP
