"""Redraw the README's figures from the README's own code.

Usage (from the repository root)::

    python tools/readme_figures.py

Runs the README's Python blocks in order in a scratch directory (as ``tests/test_readme.py``
does; about half a minute on one core) and copies each figure they write that the README shows
(``FIGURES``) into ``docs/figures/``. A figure is therefore always what the code next to it
draws.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("compressed_spectra.png",)  # written by README blocks, shown from docs/figures/
TARGET = ROOT / "docs" / "figures"


def readme_blocks(readme: Path = ROOT / "README.md") -> list[str]:
    """The README's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)


def main() -> int:
    """Run the README's blocks in a scratch directory; copy :data:`FIGURES` to ``docs/figures``."""
    import matplotlib

    matplotlib.use("Agg")
    sys.path.insert(0, str(ROOT))  # models/ and studies/, as for the tests
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            namespace: dict = {}
            for block in readme_blocks():
                exec(compile(block, str(ROOT / "README.md"), "exec"), namespace)
            TARGET.mkdir(parents=True, exist_ok=True)
            for name in FIGURES:
                shutil.copyfile(Path(scratch) / name, TARGET / name)
                print(f"wrote {TARGET / name}")
        finally:
            os.chdir(here)
    return 0


if __name__ == "__main__":
    sys.exit(main())
