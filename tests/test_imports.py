"""The floor plan: no module imports one above it, and ``import tensornet`` stays light.

Layers, bottom to top (DESIGN.md): ``core`` and ``io`` <- ``formats`` <- ``weights`` (and
``runs``) <- ``spectra`` <- ``nn`` <- ``analysis`` <- ``plot`` <- ``cli`` (and ``checkpoints``)
<- ``__main__``. A module may import its own layer and the layers below; imports inside
functions count too (a lazy import upwards is still an upward edge). ``tensornet/__init__.py``
is the front door and may import anything, lazily.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tensornet"

# top-level part of tensornet -> its floor; parts on one floor may import each other
FLOORS = {
    "core": 0,
    "io": 0,
    "formats": 1,
    "weights": 2,
    "runs": 2,
    "spectra": 3,
    "nn": 4,
    "analysis": 5,
    "plot": 6,
    "plot_alloc": 6,
    "cli": 7,
    "checkpoints": 7,
    "__main__": 8,
}

# (importer, imported) -> why the upward edge is allowed; each is a lazy import inside a function
EXCEPTIONS = {
    ("tensornet.core.network", "tensornet.plot"): "TensorNetwork.draw(), DESIGN.md's hook for plot",
}

# never loaded by ``import tensornet``: each costs from 0.1 s to 3 s
HEAVY = ("torch._dynamo", "matplotlib", "safetensors", "scipy.stats", "distributed", "dask")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every tensornet module that ``path`` imports, anywhere in it.

    Relative imports are resolved; ``from . import x`` counts as importing ``package.x``.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, m) for line, m in found if m == "tensornet" or m.startswith("tensornet.")]


def floor_of(module: str) -> int | None:
    """The floor of a dotted tensornet module (``None`` for the package front door)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return FLOORS[parts[1]]


def test_every_part_of_the_package_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts = {p for p in parts if not p.startswith(".") and p not in ("__init__", "__pycache__")}
    missing = sorted(parts - set(FLOORS))
    assert not missing, f"give {missing} a floor in FLOORS (tests/test_imports.py)"


def test_the_import_parser_resolves_relative_and_lazy_imports():
    # the checker itself: relative levels, ``from . import x`` and imports inside functions
    edges = dict((m, line) for line, m in imported_modules(PACKAGE / "nn" / "select.py"))
    assert "tensornet.weights" in edges
    edges = {m for _, m in imported_modules(PACKAGE / "cli.py")}
    assert {"tensornet.plot", "tensornet.spectra", "tensornet.io"} <= edges
    assert floor_of("tensornet") is None and floor_of("tensornet.nn.layers") == FLOORS["nn"]
    edges = {m for _, m in imported_modules(PACKAGE / "core" / "network.py")}
    assert "tensornet.plot" in edges and "tensornet.core.node" in edges  # the exception is real


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_imports_one_above_it(path):
    name = _module_name(path)
    here = floor_of(name)
    upward = [
        f"line {line}: {module}"
        for line, module in imported_modules(path)
        if (floor_of(module) is None or floor_of(module) > here)
        and (name, module) not in EXCEPTIONS
    ]
    assert not upward, f"{path.relative_to(PACKAGE)} imports from above its floor: {upward}"


def _loaded_modules(code: str) -> set[str]:
    """The modules loaded by running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        check=True,
    )
    return set(run.stdout.split())


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_import_tensornet_loads_nothing_heavy():
    loaded = _loaded_modules("import tensornet")
    assert "tensornet" in loaded and "torch" not in loaded  # every name loads on first use
    assert not {m for m in loaded if m.startswith("tensornet.")}
    loaded = _loaded_modules("import tensornet as tn\nassert tn.Node and tn.model_spectra")
    assert {"torch", "tensornet.core", "tensornet.spectra"} <= loaded
    assert not _heavy(loaded)
    assert not {"tensornet.nn", "tensornet.plot", "tensornet.analysis"} & loaded


def test_cli_help_loads_nothing_heavy():
    code = (
        "import contextlib, io\n"
        "from tensornet.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['spectra', '--help'])"
    )
    loaded = _loaded_modules(code)
    assert "tensornet.cli" in loaded
    assert not _heavy(loaded)
    assert "tensornet.nn" not in loaded and "torch" not in loaded  # --help needs argparse only


def test_import_nn_does_not_load_the_compiler():
    """``import tensornet.nn`` leaves ``torch._dynamo`` (and sympy) to ``torch.compile``."""
    loaded = _loaded_modules("import tensornet.nn")
    assert "tensornet.nn.planning" in loaded
    assert not {m for m in loaded if m.startswith(("torch._dynamo", "sympy"))}


def test_heavy_parts_load_on_first_use():
    loaded = _loaded_modules("import tensornet as tn\nassert tn.nn.select_layers")
    assert "tensornet.nn" in loaded and "tensornet.plot" not in loaded
    import tensornet as tn

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tn.nothing  # noqa: B018


def test_every_public_name_resolves_lazily_to_its_module_object():
    """``tn.X`` is the object its part defines (``tn.Node is tensornet.core.Node``)."""
    import importlib

    import tensornet as tn

    for name, part in tn._NAMES.items():
        assert getattr(tn, name) is getattr(importlib.import_module(f"tensornet.{part}"), name)
    assert set(tn.__all__) <= set(dir(tn))
    assert set(tn._NAMES) <= set(tn.__all__)
    namespace: dict = {}
    exec("from tensornet import *", namespace)
    assert namespace["TT"] is tn.TT and namespace["model_spectra"] is tn.model_spectra
