"""The README's Python snippets run as written (in order, in a scratch directory), and what
their comments claim holds: values against dense float64 / numpy results."""

import csv
import math
import pathlib
import re

import numpy as np
import pytest
import torch

import tensornet as tn


def rel(x, y):
    return float(torch.linalg.vector_norm(x - y) / torch.linalg.vector_norm(x))


def check_core(ns):
    """Block 1: contraction, slicing, split."""
    a, b, c = (ns[k].tensor for k in "abc")
    dense = torch.einsum("ij,jxk,kl->lxi", a, b, c)
    assert ns["t"].legs == ("l", "x", "i")
    torch.testing.assert_close(ns["t"].tensor, dense)
    sliced = ns["sliced"]
    torch.testing.assert_close(
        sliced.tensor, torch.einsum("ij,jxk,kl->" + "".join(sliced.legs), a, b, c)
    )
    # split: the reported error is the Eckart-Young-Mirsky tail, and the rank the smallest within
    # rel_tol = 0.5 (capped at 6)
    t = ns["t"]
    s = torch.linalg.svdvals(t.tensor.reshape(8, -1))
    left, right = ns["left"], ns["right"]
    approx = tn.contract(left, right, output=t.legs).tensor
    k = left.dim([leg for leg in left.legs if leg not in t.legs][0])
    tails = [float(s[r:].norm() / s.norm()) for r in range(len(s) + 1)]
    assert k == min(6, min(r for r, e in enumerate(tails) if e <= 0.5))
    assert rel(t.tensor, approx) == pytest.approx(tails[k], rel=1e-8)


def check_spectra(ns, tmp_path):
    """Block 2: kernel spectra, truncation, tidy CSV, tree-network spectra."""
    out = ns["out"]
    assert out.error <= 0.3 + 1e-9
    with open(tmp_path / "spectra.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 + 7  # two conv layers, 7 cuts each
    net = ns["net"]
    dense = net.contract(output=("i", "x", "l")).tensor.double()
    ref = np.linalg.svd(dense.reshape(8 * 4, 8).numpy(), compute_uv=False)
    np.testing.assert_allclose(ns["sp"].values.numpy(), ref, rtol=1e-8, atol=1e-10 * ref[0])
    # truncating bond k to 4 inside the network has the dense truncation's (optimal) error
    approx = ns["net3"].contract(output=("i", "x", "l")).tensor
    assert rel(dense, approx) == pytest.approx(
        float(np.linalg.norm(ref[4:]) / np.linalg.norm(ref)), rel=1e-6
    )


def check_formats(ns):
    """Block 3: the formats keep their promises."""
    k = ns["k"]
    tt, tucker, cp = ns["tt"], ns["tucker"], ns["cp"]
    assert rel(k, tt.to_dense()) <= 0.5 and tt.error == pytest.approx(rel(k, tt.to_dense()))
    assert tucker.num_params <= 0.25 * k.numel()
    assert cp.error == pytest.approx(rel(k, cp.to_dense()), rel=1e-6)
    assert max(ns["ht"].ranks) <= 6


def check_compress_calibrated(ns):
    """The five-line example: BatchNorm statistics recomputed from ``images`` for the compressed
    model (each layer's input in training mode, pooled over all batches)."""
    small, images = ns["small"], ns["images"]
    assert ns["report"].notes == [
        "BatchNorm statistics recomputed for 2 layers from 32 samples (4 batches)"
    ]
    seen = {1: [], 4: []}
    with torch.no_grad():
        for x in images:
            h = small[0](x)
            seen[1].append(h)
            bn = small[1]
            h = small[3](torch.relu(torch.batch_norm(h, bn.weight, bn.bias, None, None, True, 0.0,
                                                     bn.eps, False)))  # fmt: skip
            seen[4].append(h)
    for i, hs in seen.items():
        h = torch.cat(hs).double()
        torch.testing.assert_close(small[i].running_mean.double(), h.mean(dim=(0, 2, 3)),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        torch.testing.assert_close(small[i].running_var.double(), h.var(dim=(0, 2, 3)),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert torch.equal(ns["net"][4].running_mean, torch.zeros(64))  # the dense model unchanged


def check_ship(ns):
    """Compress -> recalibrate -> fine-tune -> to_standard -> export on ResNet-20 (digits)."""
    from studies.common.training import evaluate

    small, data = ns["small"], ns["data"]
    assert ns["report"].notes[-1].endswith("from 1,077 samples (5 batches)")
    assert evaluate(small, data.test) > 0.7  # one-shot alone is near chance (test_calibrate)
    assert int(small.bn1.num_batches_tracked) == 5  # recalibrated after the 10 training steps
    program = torch.export.load("resnet20_small.pt2")  # saved; any batch size
    x = data.test.tensors[0][:7]
    torch.testing.assert_close(program.module()(x), small(x), rtol=1e-4, atol=1e-4)


def _same_row(shown: str, printed: str) -> bool:
    """``printed`` starts as ``shown`` does, numbers within 0.002: the README's ResNet-20 is
    trained here, and its last digit moves with the thread count of the machine."""
    want, got = shown.split(), printed.split()[: len(shown.split())]
    if len(got) != len(want):
        return False
    for w, g in zip(want, got):
        try:
            if abs(float(w) - float(g)) > 0.002:
                return False
        except ValueError:
            if w != g:
                return False
    return True


def check_compressed_spectra(ns, tmp_path, printed):
    """Spectra of the compressed ResNet-20: every layer, the Tucker-2 bond's values exact, the
    command line on the saved file with the same layers and values."""
    from tensornet.cli import main

    mixed, table, model = ns["mixed"], ns["table"], ns["model"]
    assert printed.strip().splitlines()[-1] == "20 18 tucker2 19 32"
    assert table.layers == tn.model_spectra(model).layers  # compressed or not, all listed
    layer = mixed.get_submodule("layer2.0.conv2")
    kernel = layer.to_format().to(dtype=torch.float64).to_dense()  # from the factors, float64
    for cut, m in (("out|in,kh,kw", kernel), ("in|out,kh,kw", kernel.transpose(0, 1))):
        sp = table.get("layer2.0.conv2", cut)
        ref = torch.linalg.svdvals(m.reshape(32, -1))
        assert float((sp.values - ref).abs().max()) <= 1e-10 * float(ref[0])
        assert sp.rank == 19 and torch.all(sp.values[19:] == 0)
    assert (tmp_path / "compressed_spectra.png").read_bytes()[:4] == b"\x89PNG"
    import contextlib
    import io

    printed_cli = io.StringIO()
    with contextlib.redirect_stdout(printed_cli):
        assert main(["spectra", "resnet20_mixed.safetensors", "--no-plots", "--out", "cli"]) == 0
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme[readme.index("python -m tensornet spectra resnet20_mixed") :]
    shown = re.search(r"```text\n(.*?)```", shown, re.S).group(1).splitlines()
    out_lines = printed_cli.getvalue().splitlines()
    for line in shown:  # the README's excerpt is what the command prints, cut at "  ..."
        if line != "...":
            assert any(_same_row(line.removesuffix("  ..."), o) for o in out_lines), line
    with open(tmp_path / "cli" / "spectra.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["layer"] for r in rows} == set(table.layers)
    for r in rows:
        sp = table.get(r["layer"], r["cut"])
        values = [float(v) for v in r["singular_values"].split()]
        values = torch.tensor(values, dtype=sp.values.dtype)
        torch.testing.assert_close(values, sp.values, rtol=1e-6, atol=1e-7 * float(sp.values[0]))
        assert r["compressed"] == str(r["layer"] in table.compressed)


def test_readme_figures_exist():
    """Every image the README shows is committed (``tools/readme_figures.py`` draws them)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert images
    for image in images:
        data = (root / image).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import runpy

    figures = runpy.run_path(str(root / "tools" / "readme_figures.py"))["FIGURES"]
    assert sorted(images) == sorted(f"docs/figures/{name}" for name in figures)


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    checks = {0: check_core, 1: lambda ns: check_spectra(ns, tmp_path), 2: check_formats}
    calibrated = [i for i, b in enumerate(blocks) if "calibrate=images" in b]
    shipped = [i for i, b in enumerate(blocks) if "torch.export.export(" in b]
    assert len(calibrated) == len(shipped) == 1
    checks |= {calibrated[0]: check_compress_calibrated, shipped[0]: check_ship}
    spectra = [i for i, b in enumerate(blocks) if "compressed_spectra.png" in b]
    assert len(spectra) == 1 and spectra[0] > shipped[0]  # it uses the trained ResNet-20
    for i, block in enumerate(blocks):
        capsys.readouterr()
        exec(compile(block, str(readme), "exec"), namespace)
        if i in checks:
            checks[i](namespace)
        elif i == spectra[0]:
            check_compressed_spectra(namespace, tmp_path, capsys.readouterr().out)
    assert math.isfinite(namespace["out"].error)


def _loaded_siblings(path: pathlib.Path) -> set[str]:
    """Modules of the same package that ``path`` imports when it is loaded (top-level imports
    only: ``TYPE_CHECKING`` blocks and imports inside functions do not run at load time)."""
    import ast

    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {alias.name for alias in node.names}
    return {path.with_name(f"{name}.py") for name in found} - {path}


def test_readme_layout_maps_every_module_in_load_order():
    """The Layout section names every module under tensornet/ (and nothing that is gone), each
    package's modules in an order where none loads one listed after it."""
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Layout\n") : readme.index("## Testing\n")]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    listed, package = [], ""
    for line in block.splitlines():
        first = line.split()[0] if line.strip() else ""
        if first.startswith("tensornet/") and first.endswith("/"):
            package = first
        elif first.startswith("tensornet/"):
            listed.append(first)
        elif line.startswith("  ") and first.endswith(".py"):
            listed.append(package + first)
        if "__main__.py" in line:
            listed.append("tensornet/__main__.py")
    modules = (root / "tensornet").rglob("*.py")
    on_disk = {str(p.relative_to(root)) for p in modules if p.name != "__init__.py"}
    assert sorted(set(listed)) == sorted(on_disk)
    position = {name: i for i, name in enumerate(listed)}
    for name in listed:
        for sibling in _loaded_siblings(root / name):
            other = str(sibling.relative_to(root))
            if other in position:
                assert position[other] < position[name], f"{name} loads {other}, listed later"
