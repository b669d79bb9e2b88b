"""Run a study: ``python -m studies NAME [options]`` (``python -m studies NAME --help``)."""

from __future__ import annotations

import importlib
import sys

STUDIES = {
    "truncation": (
        "studies.truncation",
        "Singh et al. 2024: truncation of conv kernels along cuts",
    ),
    "alds": (
        "studies.alds",
        "Maalouf, Liebenwein et al. 2021: ALDS global low-rank allocation vs uniform/energy SVD",
    ),
    "hybrid": (
        "studies.hybrid",
        "Wu et al. 2020: hybrid TT (conv) / HT (FC) compression at matched parameter count",
    ),
    "approx-error": (
        "studies.approx_error",
        "Schuurmans et al. 2023: is the approximation error informative?",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STUDIES:
        lines = [f"  {name:<12} {text}" for name, (_, text) in STUDIES.items()]
        print("usage: python -m studies NAME [options]\n\nstudies:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nstudies: error: unknown study {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(STUDIES[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
