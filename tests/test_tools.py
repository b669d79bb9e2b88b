"""The mutation tools stay in step with the code they mutate (cheap checks; no mutant is run)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_planted_bug_still_finds_its_line():
    """A refactor that moves a planted bug's line would silently turn the check into a no-op."""
    planted = load("planted_mutants")
    for key, (path, old, new, tests, _) in planted.MUTANTS.items():
        assert (ROOT / path).read_text().count(old) == 1, f"{key}: text not found once in {path}"
        assert old != new, key
        assert all((ROOT / t).is_file() for t in tests), key


def test_mutate_lists_existing_modules_and_tests():
    mutate = load("mutate")
    for module, tests in mutate.TESTS.items():
        assert (ROOT / module).is_file(), module
        assert tests, module
        for t in tests:  # a file, or one test of it (``path::test_name``)
            path, _, test = t.partition("::")
            assert (ROOT / path).is_file(), (module, t)
            assert not test or f"def {test}(" in (ROOT / path).read_text(), (module, t)


def test_equivalent_mutants_are_named_after_listed_modules_with_reasons():
    mutate = load("mutate")
    dotted = {m.removesuffix(".py").replace("/", ".") for m in mutate.TESTS}
    for listing in (ROOT / "tools" / "equivalent_mutants").glob("*.txt"):
        assert listing.stem in dotted, listing.name
        for line in listing.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, why = line.partition("#")
                pattern = rf"{re.escape(listing.stem)}\.\S+__mutmut_\d+"
                assert re.fullmatch(pattern, name.strip()), line
                assert len(why.strip()) > 10, f"no reason given: {line}"
