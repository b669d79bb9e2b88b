"""``tensornet spectra`` on files written by ``tensornet.nn.save``: each compressed layer is its
kernel (format rebuilt from the file's records), never its factors, with the values of the
rebuilt dense model's checkpoint; files whose records cannot be interpreted are refused."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import tensornet.nn as tnn
from tensornet.checkpoints import CLIError, load_kernels, load_state_dict
from tensornet.cli import main
from tensornet.formats import Format, format_names
from tensornet.spectra import weight_spectra
from tensornet.weights import replace_module

FORMATS = {"1": "tucker2", "3": "tt", "5": "cp", "7": "svd", "11": "svd"}  # layer -> format
TIED = "9"  # the same compressed module as layer "7"


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _model() -> nn.Sequential:
    """A small CNN: dense conv, tucker2, tt, cp and svd convs (one tied twice), svd linear."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 10, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(10, 10, 1),
        nn.ReLU(),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(10 * 4 * 4, 6),
    )
    for name, fmt in FORMATS.items():
        old = net.get_submodule(name)
        new = (
            tnn.TNLinear.from_linear(old, fmt, fraction=0.4)
            if isinstance(old, nn.Linear)
            else tnn.TNConv2d.from_conv(old, fmt, fraction=0.4)
        )
        replace_module(net, name, new)
    replace_module(net, TIED, net.get_submodule("7"))
    net(torch.randn(2, 3, 4, 4))  # it runs
    return net


def _dense(model: nn.Sequential) -> nn.Sequential:
    """The same model with every compressed layer as a plain conv / linear (ties kept)."""
    done: dict[int, nn.Module] = {}
    for name, m in list(model.named_modules(remove_duplicate=False)):
        if isinstance(m, (tnn.TNConv2d, tnn.TNLinear)):
            if id(m) not in done:
                done[id(m)] = m.to_conv() if isinstance(m, tnn.TNConv2d) else m.to_linear()
            replace_module(model, name, done[id(m)])
    return model


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    small = _model()
    tnn.save(small, tmp / "small.safetensors", {"epoch": 1})
    dense = {k: v.detach().clone() for k, v in _dense(small).state_dict().items()}
    save_file(dense, str(tmp / "dense.safetensors"))
    return tmp / "small.safetensors", tmp / "dense.safetensors"


def test_compressed_checkpoint_matches_the_rebuilt_dense_checkpoint(files, tmp_path, capsys):
    small, dense = files
    assert main(["spectra", str(dense), "--out", str(tmp_path / "d"), "--no-plots"]) == 0
    dense_out = capsys.readouterr().out
    assert main(["spectra", str(small), "--out", str(tmp_path / "c"), "--chi", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    got, ref = _rows(tmp_path / "c" / "spectra.csv"), _rows(tmp_path / "d" / "spectra.csv")
    layers = ["0", "1", "3", "5", "7", "9", "11"]
    assert list(dict.fromkeys(r["layer"] for r in got)) == layers  # no factor is a layer
    assert [(r["layer"], r["cut"]) for r in got] == [(r["layer"], r["cut"]) for r in ref]
    formats = {**FORMATS, TIED: FORMATS["7"]}
    for g, d in zip(got, ref):
        assert g["chi_max"] == d["chi_max"]
        assert g["compressed"] == str(g["layer"] in formats) and d["compressed"] == "False"
        assert g["format"] == formats.get(g["layer"], "")
        values = torch.tensor([float(v) for v in g["singular_values"].split()])
        expect = torch.tensor([float(v) for v in d["singular_values"].split()])
        assert values.shape == expect.shape
        assert float((values - expect).abs().max()) <= 2e-6 * float(expect[0])  # float32 rounding
        assert float(g["entropy"]) == pytest.approx(float(d["entropy"]), abs=1e-4)
    for name in ("bond_spectra.png", "entropy_heatmap.png", "truncation_curves.png"):
        assert (tmp_path / "c" / name).read_bytes()[:4] == b"\x89PNG"
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["layer", "shape", "kernel"]
    kinds = {line.split()[0]: line.split()[2] for line in lines[2:9]}
    small_model = _model()
    ranks = {name: small_model.get_submodule(name).ranks for name in formats}
    assert kinds == {
        "0": "dense",
        **{n: f"{formats[n]}({','.join(map(str, ranks[n]))})" for n in formats},
    }
    assert "factors" not in captured.out
    out = tmp_path / "c"
    assert lines[-1] == f"7 layers, 43 cuts; wrote {out / 'spectra.csv'}, " + ", ".join(
        str(out / name)
        for name in ("bond_spectra.png", "entropy_heatmap.png", "truncation_curves.png")
    )
    # the dense run's rows are the compressed run's, less the kernel column
    for c, d in zip(lines[2:9], dense_out.splitlines()[2:9]):
        c_cells = c.split()
        assert c_cells[:2] + c_cells[3:8] == d.split()[:7]


def test_load_kernels_gives_formats_in_place_of_factors(files):
    small, dense = files
    kernels = load_kernels(small)
    assert list(kernels) == list(load_state_dict(dense))  # same names, same order
    assert all(isinstance(kernels[f"{n}.weight"], Format) for n in [*FORMATS, TIED])
    assert kernels["7.weight"] is kernels[f"{TIED}.weight"]
    ref = load_state_dict(dense)
    for name, w in kernels.items():
        dense_w = w.to_dense() if isinstance(w, Format) else w
        torch.testing.assert_close(dense_w, ref[name], rtol=1e-5, atol=1e-6)
    raw = load_state_dict(small)  # the raw tensors, factors included, as before
    assert "1.weight" not in raw and any(k.startswith("1.factors.") for k in raw)
    assert load_kernels(dense).keys() == ref.keys()  # a plain file is read as it is


def test_layer_pattern_selects_compressed_layers(files, tmp_path):
    small, _ = files
    out = tmp_path / "o"
    assert main(["spectra", str(small), "--layers", "[37]", "--out", str(out), "--no-plots"]) == 0
    rows = _rows(out / "spectra.csv")
    assert {r["layer"] for r in rows} == {"3", "7"}
    assert {r["format"] for r in rows} == {"tt", "svd"}


def _rewrite(src, dst, edit_meta=None, edit_tensors=None):
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    records = json.loads(meta["tensornet"])
    if edit_meta:
        edit_meta(records)
    meta["tensornet"] = json.dumps(records)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=meta)


def _set(path, value):
    def edit(records):
        target = records
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _factor(layer, edit):
    def change(tensors):
        name = next(k for k in sorted(tensors) if k.startswith(f"{layer}.factors."))
        edit(tensors, name)

    return change


BAD = {
    "version": (_set(["version"], 2), None, "field 'version' must be 1"),
    "format": (
        _set(["layers", "3", "structure", "format"], "qtt"),
        None,
        "layer '3': bad structure (unknown format 'qtt'",
    ),
    "kind": (_set(["layers", "5", "kind"], "conv5d"), None, "field 'kind' must be one of"),
    "ranks": (
        _set(["layers", "3", "structure", "ranks"], [2, 2, 2]),
        None,
        "compressed layer '3'",
    ),
    "alias": (_set(["layers", TIED, "same_as"], "nowhere"), None, "field 'same_as' must name"),
    "record": (_set(["layers", "3"], [1, 2]), None, "layer '3' must be a JSON object, got [1, 2]"),
    "field": (
        lambda r: r["layers"]["3"].pop("plan"),
        None,
        "layer '3' lacks the field(s) ['plan']",
    ),
    "type": (
        _set(["layers", "3", "stride"], "x"),
        None,
        "layer '3': field 'stride' must be a list of 2 positive ints, got 'x'",
    ),
    "kind type": (
        _set(["layers", "3", "kind"], ["conv2d"]),
        None,
        "layer '3': field 'kind' must be one of ['linear', 'conv1d', 'conv2d', 'conv3d', "
        "'conv_transpose2d'], got ['conv2d']",
    ),
    "alias field": (
        _set(["layers", TIED, "x"], 1),
        None,
        f"layer '{TIED}' has unknown field(s) ['x']",
    ),
    "alias type": (
        _set(["layers", TIED, "same_as"], ["7"]),
        None,
        "field 'same_as' must name a layer with a full record, got ['7']",
    ),
    "missing factor": (
        None,
        _factor("5", lambda t, k: t.pop(k)),
        "compressed layer '5': CP.from_factors: tensors must be the factors",
    ),
    "wrong shape": (
        None,
        _factor("1", lambda t, k: t.__setitem__(k, torch.zeros(2, 2))),
        "must have shape",
    ),
    "nan factor": (
        None,
        _factor("11", lambda t, k: t[k].view(-1).__setitem__(0, float("nan"))),
        "tensor '11.factors.",
    ),
    "stray tensor": (
        None,
        lambda t: t.__setitem__("3.weight", torch.zeros(12, 12, 3, 3)),
        "tensor '3.weight' is not one the compressed layer '3' holds\n",
    ),
    "tied tensors": (
        None,
        lambda t: t.__setitem__(f"{TIED}.bias", torch.zeros(10)),
        f"compressed layer '{TIED}' holds (it shares the factors of '7')",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_uninterpretable_files_are_named_and_refused(files, tmp_path, case, capsys):
    edit_meta, edit_tensors, message = BAD[case]
    bad = tmp_path / "bad.safetensors"
    _rewrite(files[0], bad, edit_meta, edit_tensors)
    out = tmp_path / "out"
    assert main(["spectra", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tensornet: error: ") and str(bad) in err and message in err
    assert err.count("\n") == 1 and not out.exists()
    with pytest.raises(CLIError, match="compressed layer|compressed layers of"):
        load_kernels(bad)


def test_a_record_that_is_not_json_is_refused(files, tmp_path, capsys):
    with safe_open(str(files[0]), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"tensornet": "{not json"})
    assert main(["spectra", str(bad), "--no-plots", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot interpret the compressed layers of" in err and "is not valid JSON" in err


def test_an_uncompressed_nn_save_file_reads_as_a_state_dict(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    tnn.save(net, tmp_path / "plain.safetensors")
    kernels = load_kernels(tmp_path / "plain.safetensors")
    assert list(kernels) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for k, v in net.state_dict().items():
        assert torch.equal(kernels[k], v)


@pytest.mark.parametrize("fmt", format_names())
def test_every_format_is_read_back_as_its_kernel(fmt, tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(12, 8, 3), nn.Flatten(), nn.Linear(8, 6))
    net[0] = tnn.TNConv2d.from_conv(net[0], fmt, fraction=0.5)
    net[2] = tnn.TNLinear.from_linear(net[2], fmt, fraction=0.5)
    tnn.save(net, tmp_path / "m.safetensors")
    kernels = load_kernels(tmp_path / "m.safetensors")
    assert list(kernels) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for i in (0, 2):
        kernel = kernels[f"{i}.weight"]
        assert kernel.name == fmt and kernel.structure == net[i].structure
        for name, factor in net[i].factors.items():  # bitwise the saved factors
            assert torch.equal(kernel.factor_tensors()[name], factor.detach())
        assert torch.equal(kernels[f"{i}.bias"], net[i].bias.detach())
    table = weight_spectra(kernels)
    dense = weight_spectra({"0": net[0].weight.detach(), "2": net[2].weight.detach()})
    assert table.layers == dense.layers and len(table) == len(dense) == 8
    for sp, ref in zip(table, dense):
        assert sp.label == ref.label and sp.format == fmt
        assert float((sp.values - ref.values).abs().max()) <= 1e-5 * float(ref.values[0])


def test_overview_plots_colour_each_rank_line_as_its_layer(files, tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    import tensornet.cli as cli

    figures = []
    monkeypatch.setattr(cli, "save_figure", lambda fig, path: figures.append(fig))
    argv = ["spectra", str(files[0]), "--out", str(tmp_path / "o"), "--chi", "3"]
    assert main(argv) == 0
    spectra_fig = figures[0]  # bond_spectra.png: one panel per one-vs-rest cut
    ranks_seen = 0
    for ax in spectra_fig.axes[:4]:
        colours, current = {}, None
        for line in ax.lines:
            label = line.get_label()
            if label.startswith("χ"):
                assert to_hex(line.get_color()) == to_hex("0.3")
            elif label.startswith("_"):  # a rank line: dotted, in its layer's colour
                assert line.get_linestyle() == ":" and line.get_color() == current
                ranks_seen += 1
            else:
                current = line.get_color()
                colours[label] = current
        assert len(set(colours.values())) == len(colours)  # one colour per layer
        legend = {h.get_label(): h.get_color() for h in spectra_fig.legends[0].legend_handles}
        assert all(legend[name] == c for name, c in colours.items())
    assert ranks_seen >= 5
    assert any(line.get_label() == "χ = 3" for line in spectra_fig.axes[0].lines)


def test_an_unknown_kind_is_refused_naming_the_known_ones(files, tmp_path):
    # load and read_structures share the kind registry (nn.kinds): a kind it lacks is refused
    bad = tmp_path / "bad.safetensors"
    _rewrite(files[0], bad, _set(["layers", "3", "kind"], "conv2d_new"))
    expect = (
        r"layer '3': field 'kind' must be one of \['linear', 'conv1d', 'conv2d', 'conv3d', "
        r"'conv_transpose2d'\], got 'conv2d_new'"
    )
    with pytest.raises(CLIError, match=expect):
        load_kernels(bad)


def test_odd_files_and_read_errors_are_named(tmp_path, monkeypatch):
    import tensornet.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "_KINDS", ())  # a kind of file none of the tests name
    with pytest.raises(CLIError, match=r"is not a regular file, not a checkpoint file; refused$"):
        load_kernels(tmp_path)
    monkeypatch.undo()

    def denied(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoints, "_load_torch", denied)
    path = tmp_path / "locked.pt"
    path.write_bytes(b"x")
    with pytest.raises(CLIError) as err:
        load_kernels(path)
    assert str(err.value) == f"cannot read {path}: Permission denied"


def test_read_structures_names_a_file_that_is_not_safetensors(tmp_path):
    from tensornet.nn.serialize import read_structures

    path = tmp_path / "x.bin"
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=rf"^{path}: not a safetensors file"):
        read_structures(path)


def test_an_unwritable_output_folder_is_named(files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub"
    assert main(["spectra", str(files[0]), "--out", str(out), "--no-plots"]) == 2
    assert capsys.readouterr().err == f"tensornet: error: cannot write to {out}: Not a directory\n"


def test_shapes_and_the_kernel_column_of_the_summary():
    from tensornet.cli import _layer_shapes, _summary
    from tensornet.core.spectrum import Spectrum
    from tensornet.spectra import SpectrumTable

    shapes = _layer_shapes({
        "a.weight": torch.zeros(2, 1, 1, 1, 3), "b": torch.zeros(1, 1, 1, 1, 1, 2),
        "c": torch.zeros(2), "d": torch.zeros(3, 2),
    })  # fmt: skip
    assert shapes == {"a": (2, 1, 1, 1, 3), "d": (3, 2)}
    table = SpectrumTable([
        Spectrum(torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64), "o", "ih", name="conv"),
        Spectrum(torch.tensor([2.0, 1.0], dtype=torch.float64), "o", "i", name="fc"),
    ])  # fmt: skip
    text = _summary(table, {"conv": (4, 2, 1), "fc": (2, 2)}, None, {"conv": "cp(3)"})
    assert text.splitlines()[:4] == [
        "layer  shape  kernel  cut of lowest S/log(chi_max)  chi_max  S/log(chi_max)  S min  S max"
        "  eff. rank",
        "-----  -----  ------  ----------------------------  -------  --------------  -----  -----"
        "  ---------",
        "conv   4x2x1  cp(3)   o|ih                                4           0.626  0.868  0.868"
        "       2.38",
        "fc     2x2    dense   o|i                                 2           0.722  0.500  0.500"
        "       1.65",
    ]
