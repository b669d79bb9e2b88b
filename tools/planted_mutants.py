"""Plant the bugs named in issue 13 one at a time and check that the tests catch each.

Usage (from the repository root)::

    python tools/planted_mutants.py            # all of them
    python tools/planted_mutants.py tt_sqrt_d  # some of them

Each mutant is a textual edit of one source file; the file is restored afterwards (also on
Ctrl-C). A mutant is *caught* when its tests fail. Exit status 1 when any survives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# id: (file, old text, new text, test files, what the bug is)
MUTANTS: dict[str, tuple[str, str, str, list[str], str]] = {
    "tucker_hooi_from_x": (
        "tensornet/formats/tucker.py",
        "factors[i] = leading_vectors(y, axis, step)",
        "factors[i] = leading_vectors(x, axis, step)",
        ["tests/formats/test_tucker.py"],
        "HOOI takes each factor from x instead of the projected tensor (HOOI becomes HOSVD)",
    ),
    "tt_budget_sqrt_d": (
        "tensornet/formats/tt.py",
        "return limit / math.sqrt(steps)",
        "return limit / math.sqrt(steps + 1)",
        ["tests/formats/test_tt.py"],
        "TT-SVD's uniform per-step budget divided by sqrt(d) instead of sqrt(d - 1)",
    ),
    "cp_half_step": (
        "tensornet/formats/cp.py",
        "            factors[k] = a\n            grams[k] = a.mH @ a",
        "            factors[k] = (a + factors[k]) / 2\n            grams[k] = factors[k].mH @ factors[k]",
        ["tests/formats/test_cp.py"],
        "CP-ALS moves each factor only half way to the least-squares update",
    ),
    "study_f1_norm_kept": (
        "studies/verdicts/truncation.py",
        'values = [1 - v["norm_kept"] for v in entry["layers"].values()]',
        'values = [v["norm_kept"] for v in entry["layers"].values()]',
        ["tests/studies/test_truncation_verdicts.py", "tests/studies/test_truncation_study.py"],
        "finding 1 counts the kernel norm kept instead of the norm lost",
    ),
    "study_f3_threshold": (
        "studies/verdicts/truncation.py",
        '"retrained_drop": ("retrained", "below", "the re-trained drop", 3),',
        '"retrained_drop": ("aggressive", "below", "the re-trained drop", 3),',
        ["tests/studies/test_truncation_verdicts.py", "tests/studies/test_truncation_study.py"],
        "finding 3 tests the aggressive model's drop where the re-trained one belongs",
    ),
    "cache_evicts_newest": (
        "tensornet/core/contract.py",
        "            self._data.move_to_end(key)\n            while len(self._data) > self.maxsize:\n"
        "                self._data.popitem(last=False)",
        "            self._data.move_to_end(key)\n            while len(self._data) > self.maxsize:\n"
        "                self._data.popitem(last=True)",
        ["tests/core/test_contract.py", "tests/core/test_planning.py"],
        "the plan cache evicts the newest entry instead of the least recently used",
    ),
    "plan_before_lookup": (
        "tensornet/core/contract.py",
        "    hit = _CACHE.get(key)\n    if hit is None:\n        hit = build()\n",
        "    hit = None\n    if hit is None:\n        hit = build()\n",
        ["tests/core/test_contract.py", "tests/core/test_planning.py"],
        "cached() plans without looking the key up (a repeat plans again)",
    ),
    "max_intermediate_after": (
        "tensornet/core/network.py",
        "        _, program = prepared(\n"
        "            inputs, shapes, out, optimize, dtype, device, max_intermediate, slicing\n"
        "        )\n",
        "        _, program = prepared(\n"
        "            inputs, shapes, out, optimize, dtype, device, max_intermediate, slicing,"
        " refuse=False\n        )\n        program(*tensors)\n        prepared(\n"
        "            inputs, shapes, out, optimize, dtype, device, max_intermediate, slicing\n"
        "        )\n",
        ["tests/core/test_planning.py", "tests/core/test_contract.py"],
        "the largest-intermediate limit is checked after contracting instead of before",
    ),
    "qr_split_not_isometry": (
        "tensornet/core/split.py",
        "    q, r = qr(node.matricize(left))\n",
        "    q, r = qr(node.matricize(left))\n    q, r = 2 * q, r / 2\n",
        ["tests/core/test_split.py"],
        "qr_split's left factor is no longer an isometry (the product is unchanged)",
    ),
    "mixed_devices_unchecked": (
        "tensornet/core/network.py",
        "        if len(devices) > 1:\n",
        "        if False:\n",
        ["tests/core/test_network.py", "tests/core/test_node.py"],
        "the mixed-device check of a network is removed",
    ),
    "gram_in_float32": (
        "tensornet/spectra.py",
        "wide = batch.to(torch.complex128 if batch.is_complex() else torch.float64)",
        "wide = batch.to(torch.complex64 if batch.is_complex() else torch.float32)",
        ["tests/test_spectra.py"],
        "the Gram route of the spectra is computed in float32 instead of float64",
    ),
    "kernel_spectra_unbatched": (
        "tensornet/spectra.py",
        "groups[(tuple(m.shape), m.dtype, m.device)].append(i)",
        "groups[(i,)].append(i)",
        ["tests/test_spectra.py"],
        "kernel_spectra computes each matricisation alone instead of batching equal shapes",
    ),
    "combined_json_not_reused": (
        "studies/truncation.py",
        "        if path.exists():  # checked against this configuration",
        "        if False and path.exists():  # checked against this configuration",
        ["tests/studies/test_truncation_study.py"],
        "combined.json is recomputed on every rerun instead of reused",
    ),
}


def run(name: str) -> tuple[bool, float]:
    rel, old, new, tests, _ = MUTANTS[name]
    path = ROOT / rel
    original = path.read_text()
    if original.count(old) != 1:
        raise SystemExit(f"{name}: the text to mutate occurs {original.count(old)} times in {rel}")
    tests = [t for t in tests if (ROOT / t).exists()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        path.write_text(original.replace(old, new))
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        path.write_text(original)
    return proc.returncode != 0, time.perf_counter() - start


def main(argv: list[str]) -> int:
    names = argv or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise SystemExit(f"unknown mutants {unknown}; known: {', '.join(MUTANTS)}")
    survived = []
    for name in names:
        caught, seconds = run(name)
        print(
            f"{name:28s} {'caught' if caught else 'SURVIVED':8s} {seconds:6.1f}s  "
            f"{MUTANTS[name][4]}",
            flush=True,
        )
        if not caught:
            survived.append(name)
    print(f"{len(names) - len(survived)} of {len(names)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
