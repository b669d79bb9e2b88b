"""The README's Python snippets run as written (in order, in a scratch directory)."""

import pathlib
import re


def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(readme), "exec"), namespace)
    assert (tmp_path / "spectra.csv").exists()
