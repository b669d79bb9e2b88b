"""Files the library writes get the user's permissions: ``0o666 & ~umask`` when new, the mode of
the file they replace otherwise (issue 24, item 4)."""

import os
import re
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tensornet.io as tio
from studies.common.runner import LOCK_NAME, OutputLock
from tensornet.cli import main
from tensornet.io import atomic_path, atomic_write_text, save_figure
from tensornet.nn import TNLinear
from tensornet.nn import save as nn_save
from tensornet.runs import ResultStore

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the umask for one test (``umask(0o022)``); the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077, 0o000])
def test_a_new_file_gets_0666_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "new" / "a.txt", "x")
    assert mode(tmp_path / "new" / "a.txt") == 0o666 & ~mask
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.txt"]


@pytest.mark.parametrize("old_mode", [0o640, 0o600, 0o664, 0o444, 0o755])
def test_a_replaced_file_keeps_its_mode(tmp_path, umask, old_mode):
    umask(0o022)
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(old_mode)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == old_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_setuid_and_sticky_bits_of_a_replaced_file_are_not_copied(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(0o4755 | stat.S_ISVTX)
    atomic_write_text(target, "new")
    assert mode(target) == 0o755


def test_the_temporary_file_is_private_while_written_and_moved_with_the_final_mode(
    tmp_path, umask, monkeypatch
):
    umask(0o002)
    target = tmp_path / "a.txt"
    seen = {}
    real_replace = os.replace

    def replace(src, dst):
        seen["at_replace"] = mode(src)
        real_replace(src, dst)

    monkeypatch.setattr(tio.os, "replace", replace)
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and re.fullmatch(r"\.a\.txt\.[0-9a-f]{8}\.tmp", tmp.name)
        assert tmp.read_bytes() == b""
        seen["writing"] = mode(tmp)
        tmp.write_text("x")
    assert seen == {"writing": 0o600, "at_replace": 0o664}
    assert mode(target) == 0o664


def test_a_failed_write_leaves_the_old_file_and_mode_and_no_temporary(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(0o640)
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failed_move_leaves_no_temporary(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(tio.os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_taken_temporary_names_are_skipped_and_never_touched(tmp_path, monkeypatch):
    names = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(tio.secrets, "token_hex", lambda n: next(names) if n == 4 else "bad")
    taken = tmp_path / ".a.txt.aaaaaaaa.tmp"
    taken.write_text("someone else's")
    taken.chmod(0o644)
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.name == ".a.txt.bbbbbbbb.tmp"
        tmp.write_text("mine")
    assert taken.read_text() == "someone else's" and mode(taken) == 0o644
    assert (tmp_path / "a.txt").read_text() == "mine"


def test_no_free_temporary_name_is_a_clear_error(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tio.secrets, "token_hex", lambda n: calls.append(n) or "aaaaaaaa")
    (tmp_path / ".a.txt.aaaaaaaa.tmp").write_text("taken")
    with pytest.raises(FileExistsError, match=r"no free temporary name next to .*a\.txt after 100"):
        atomic_write_text(tmp_path / "a.txt", "x")
    assert len(calls) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.txt.aaaaaaaa.tmp"]


def test_a_symlinked_temporary_name_is_not_followed(tmp_path, monkeypatch):
    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(tio.secrets, "token_hex", lambda n: next(names))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / ".a.txt.aaaaaaaa.tmp").symlink_to(victim)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert victim.read_text() == "keep" and (tmp_path / "a.txt").read_text() == "x"


def test_figures_follow_the_umask_and_keep_a_replaced_mode(tmp_path, umask):
    from matplotlib.figure import Figure

    umask(0o027)
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    assert mode(save_figure(fig, tmp_path / "f.png")) == 0o640
    (tmp_path / "f.png").chmod(0o604)
    assert mode(save_figure(fig, tmp_path / "f.png")) == 0o604


def test_cli_outputs_are_0644_under_umask_022(tmp_path, umask, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    checkpoint = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    umask(0o022)
    out = tmp_path / "out"
    assert main(["spectra", str(checkpoint), "--out", str(out), "--chi", "2"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "bond_spectra.png",
        "entropy_heatmap.png",
        "spectra.csv",
        "truncation_curves.png",
    ]
    assert {name: mode(out / name) for name in written} == dict.fromkeys(written, 0o644)
    (out / "spectra.csv").chmod(0o640)  # a rerun keeps the mode the user gave the file
    assert main(["spectra", str(checkpoint), "--out", str(out), "--no-plots"]) == 0
    assert mode(out / "spectra.csv") == 0o640


def test_nn_save_files_follow_the_umask_and_keep_a_replaced_mode(tmp_path, umask):
    model = torch.nn.Sequential(TNLinear(6, 4, format="svd", ranks=2))
    path = tmp_path / "m.safetensors"
    umask(0o022)
    nn_save(model, path)
    assert mode(path) == 0o644
    path.chmod(0o640)
    nn_save(model, path, {"epoch": 2})
    assert mode(path) == 0o640
    umask(0o027)
    nn_save(model, tmp_path / "n.safetensors")
    assert mode(tmp_path / "n.safetensors") == 0o640


def test_appended_results_and_study_locks_follow_the_umask(tmp_path, umask):
    umask(0o002)  # tells 0o666 & ~umask apart from a fixed 0o644
    ResultStore(tmp_path / "rows.jsonl", {"seed": 0}).add({"key": "a"})
    assert mode(tmp_path / "rows.jsonl") == 0o664
    with OutputLock(tmp_path / "study"):
        pass
    assert mode(tmp_path / "study" / LOCK_NAME) == 0o664


BYPASSES = {
    "mkstemp": r"\bmkstemp\(",
    "NamedTemporaryFile": r"\bNamedTemporaryFile\(",
    "os.replace / Path.replace / os.rename": r"\bos\.(replace|rename)\(|\.replace\(path\)",
    "savefig (use tensornet.io.save_figure)": r"\.savefig\(",
}


def test_every_writer_goes_through_the_atomic_writer():
    """Nothing in the library or the studies writes a file around ``tensornet.io``."""
    problems = []
    for path in sorted([*ROOT.glob("tensornet/**/*.py"), *ROOT.glob("studies/**/*.py")]):
        if path == ROOT / "tensornet" / "io.py":
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            problems += [f"{where} {what}" for what, rx in BYPASSES.items() if re.search(rx, line)]
            if re.search(r"\bos\.open\(.*O_CREAT", line) and "0o666" not in line:
                problems.append(f"{where} os.open(O_CREAT) without mode 0o666")
            if re.search(r"\bsave_file\(", line) and "atomic_path" not in lines[i - 1]:
                problems.append(f"{where} save_file outside `with atomic_path(...)`")
            if re.search(r"""\bopen\([^)]*["'][wax]b?["']""", line) and "tmp" not in line:
                problems.append(f"{where} open(..., 'w') outside `with atomic_path(...)`")
    assert problems == []
