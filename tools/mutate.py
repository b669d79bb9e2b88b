"""``make mutate``: mutation testing (mutmut 3) of the named modules, one module at a time.

Usage (from the repository root)::

    python tools/mutate.py                                  # every module in MODULES
    python tools/mutate.py tensornet/core/split.py ...      # some of them
    python tools/mutate.py --jobs 2 tensornet/formats/tucker.py

Each module is mutated in a scratch copy of the working tree (``.mutate/<module>``, ignored by
git) with only the test files that cover it (``TESTS`` below), ``-x`` and one thread, so a
mutant costs seconds. Per module it prints killed / survived / no tests / equivalent and the
score ``killed / (mutants - equivalent)``; "no tests" (lines no selected test reaches) count as
not killed. Survivors are listed in ``.mutate/<module>/survivors.txt`` (``mutmut show NAME``
there shows the diff).

Equivalent mutants (same behaviour as the original, so no test can kill them) are listed with
the reason in ``tools/equivalent_mutants.txt``, one ``<mutant name>  # why`` per line; they are
left out of the score. Mutant names are mutmut's (``module.x_function__mutmut_N``) and stay
stable while the function's source is unchanged.

Slow by design (minutes per module on one core): not part of ``make test`` or CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutate"
EQUIVALENT = ROOT / "tools" / "equivalent_mutants.txt"

# module -> the test files that cover it (what each mutant is run against)
TESTS: dict[str, list[str]] = {
    "tensornet/core/contract.py": ["tests/core/test_contract.py", "tests/core/test_planning.py"],
    "tensornet/core/einsum.py": ["tests/core/test_contract.py"],
    "tensornet/core/executor.py": ["tests/core/test_executor.py", "tests/core/test_contract.py"],
    "tensornet/core/gauge.py": ["tests/core/test_gauge.py"],
    "tensornet/core/linalg.py": ["tests/core/test_linalg.py", "tests/core/test_gradients.py"],
    "tensornet/core/network.py": ["tests/core/test_network.py"],
    "tensornet/core/node.py": ["tests/core/test_node.py"],
    "tensornet/core/pathfind.py": ["tests/core/test_planning.py"],
    "tensornet/core/slicing.py": ["tests/core/test_planning.py"],
    "tensornet/core/spectrum.py": ["tests/test_spectra.py"],
    "tensornet/core/split.py": ["tests/core/test_split.py", "tests/core/test_split_details.py"],
    "tensornet/core/truncation.py": ["tests/core/test_truncation.py"],
    "tensornet/core/validate.py": ["tests/test_bad_inputs.py"],
    "tensornet/formats/base.py": ["tests/formats/test_common.py"],
    "tensornet/formats/cp.py": ["tests/formats/test_cp.py"],
    "tensornet/formats/grouped.py": ["tests/formats/test_tr_lowrank_grouped.py"],
    "tensornet/formats/ht.py": ["tests/formats/test_ht.py"],
    "tensornet/formats/lowrank.py": ["tests/formats/test_tr_lowrank_grouped.py"],
    "tensornet/formats/structure.py": ["tests/formats/test_common.py"],
    "tensornet/formats/tensorize.py": ["tests/formats/test_ttmatrix.py"],
    "tensornet/formats/tr.py": ["tests/formats/test_tr_lowrank_grouped.py"],
    "tensornet/formats/tt.py": ["tests/formats/test_tt.py"],
    "tensornet/formats/ttmatrix.py": ["tests/formats/test_ttmatrix.py"],
    "tensornet/formats/tucker.py": ["tests/formats/test_tucker.py"],
    "tensornet/analysis.py": ["tests/test_analysis.py"],
    "studies/truncation.py": ["tests/studies/test_truncation_verdicts.py"],
}
MODULES = list(TESTS)


def equivalents() -> dict[str, str]:
    """Documented equivalent mutants: name -> why."""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, why = line.partition("#")
                out[name.strip()] = why.strip()
    return out


def scratch_copy(module: str) -> Path:
    """The working tree (tracked and untracked, not ignored files) copied to a scratch folder."""
    dest = SCRATCH / module.replace("/", "_").removesuffix(".py")
    shutil.rmtree(dest, ignore_errors=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(".mutate/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    package = module.split("/")[0]
    others = sorted({f.split("/")[0] for f in files if "/" in f} - {package, "tests"})
    config = (
        "\n\n[tool.mutmut]\n"
        f'source_paths = ["{package}"]\n'
        f'only_mutate = ["{module}"]\n'
        f"also_copy = {others!r}\n".replace("'", '"')
        + f"pytest_add_cli_args_test_selection = {TESTS[module]!r}\n".replace("'", '"')
        + 'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
    )
    with open(dest / "pyproject.toml", "a") as f:
        f.write(config)
    return dest


def mutate(module: str, jobs: int, known: dict[str, str]) -> dict[str, int | float]:
    where = scratch_copy(module)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run(
        [*mutmut, "run", "--max-children", str(jobs)], cwd=where, env=env,
        stdout=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    listing = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=where, env=env, capture_output=True, text=True
    ).stdout
    status = dict(re.findall(r"^\s+(\S+): (.+)$", listing, re.M))
    counts: dict[str, int | float] = {"mutants": len(status)}
    for key in ("killed", "timeout", "survived", "no tests"):
        counts[key] = sum(1 for s in status.values() if s == key)
    equivalent = [n for n in status if n in known and status[n] != "killed"]
    counts["equivalent"] = len(equivalent)
    killed = counts["killed"] + counts["timeout"]
    counted = counts["mutants"] - len(equivalent)
    counts["score"] = 100.0 * killed / counted if counted else float("nan")
    survivors = [
        f"{n}: {s}" for n, s in sorted(status.items())
        if s not in ("killed", "timeout") and n not in known
    ]  # fmt: skip
    (where / "survivors.txt").write_text("\n".join(survivors) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all {len(MODULES)} modules")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    args = parser.parse_args(argv)
    modules = args.modules or MODULES
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        parser.error(f"no test files known for {unknown}; add them to TESTS in tools/mutate.py")
    known = equivalents()
    print(f"{'module':34s} {'mutants':>7s} {'killed':>6s} {'surv.':>5s} {'no t.':>5s} "
          f"{'equiv':>5s} {'score':>6s}", flush=True)  # fmt: skip
    for module in modules:
        c = mutate(module, args.jobs, known)
        print(
            f"{module:34s} {c['mutants']:7d} {c['killed'] + c['timeout']:6d} {c['survived']:5d} "
            f"{c['no tests']:5d} {c['equivalent']:5d} {c['score']:5.1f}%",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
