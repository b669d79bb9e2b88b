"""Every script in ``examples/`` runs to the end (scratch directory, Agg backend), and what the
quick tour prints about its results is true."""

import pathlib
import re
import runpy

import matplotlib
import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script)])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    if script.name == "quick_tour.py":
        assert "contract == einsum: True" in out
        reported, measured = map(
            float, re.search(r"reported error (\S+), measured (\S+)", out).groups()
        )
        assert reported == pytest.approx(measured, abs=2e-6)
        assert float(re.search(r"gradient norm through a truncated split: (\S+)", out)[1]) > 0


def test_there_are_examples():
    assert EXAMPLES
