"""Output-folder plumbing shared by the studies: lock, temporaries, JSON artefacts, arguments."""

import argparse
import json

import pytest

from studies.common import cli, runner
from studies.common.cli import StudyError


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    out = tmp_path / "out"
    with runner.OutputLock(out):
        with pytest.raises(StudyError, match="another run is using it"):
            with runner.OutputLock(out):
                pass
    with runner.OutputLock(out):  # released on exit
        pass
    assert (out / ".lock").is_file()


def test_lock_in_another_process(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(60)", str(out / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out.mkdir()
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyError, match="lock"):
            runner.OutputLock(out).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with runner.OutputLock(out):  # a killed holder leaves no stale lock
        pass


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "seed-0").mkdir()
    stale = [tmp_path / ".report.md.x1y2.tmp", tmp_path / "seed-0" / ".sweep.csv.abc.tmp"]
    for p in stale:
        p.write_text("partial")
    keep = tmp_path / "seed-0" / "sweep.csv"
    keep.write_text("whole")
    assert sorted(runner.remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert keep.exists() and not any(p.exists() for p in stale)


def test_json_artefacts_write_nan_as_null_and_name_bad_files(tmp_path):
    path = tmp_path / "a.json"
    runner.write_json(path, {"acc": float("nan"), "xs": [1.0, float("-inf")]})
    assert json.loads(path.read_text()) == {"acc": None, "xs": [1.0, None]}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    for text, fragment in [
        ("", "empty"),
        ('{"a": 1', "not valid JSON"),
        ("\x00\xff", "not a text file"),
    ]:
        path.write_bytes(text.encode("latin1"))
        with pytest.raises(StudyError, match=fragment) as err:
            runner.read_json(path, "a result", "delete it")
        assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_results_file_checks(tmp_path):
    path = tmp_path / "sweep.jsonl"
    runner.check_results_file(path, {"a": 1})  # missing: fine
    header = json.dumps({"kind": "config", "config": {"a": 1}})
    cell = json.dumps({"kind": "cell", "key": "k"})
    path.write_text(f"{header}\n{cell}\n{cell[:9]}")  # a torn last line is fine
    runner.check_results_file(path, {"a": 1})
    cases = [
        (f"{header}\n{{oops\n{cell}\n", "line 2 is not a JSON record"),
        (f"{cell}\n", "not a results file of this study"),
        (f"{header}\n{cell}\n", "changed: a"),
        ("", "empty file"),
        (f"{header}\n[1]\n", "line 2 is not a sweep cell"),
    ]
    for text, fragment in cases:
        path.write_text(text)
        config = {"a": 2} if "changed" in fragment else {"a": 1}
        with pytest.raises(StudyError, match=fragment):
            runner.check_results_file(path, config)


def test_argument_types():
    assert cli.positive_int("4") == 4 and cli.nonnegative_int("0") == 0
    assert cli.fraction("0.5") == 0.5 and cli.positive_float("2") == 2.0
    assert cli.int_list("3,1") == (3, 1) and cli.device("cpu") == "cpu"
    for fn, text in [
        (cli.positive_int, "0"), (cli.positive_int, "1.5"), (cli.nonnegative_int, "-1"),
        (cli.fraction, "1"), (cli.fraction, "inf"), (cli.positive_float, "0"),
        (cli.positive_float, "nan"), (cli.int_list, ""), (cli.int_list, "2,-1"),
        (cli.device, "cuda:99"), (cli.device, "nonsense"),
    ]:  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


def test_run_cli_turns_errors_into_one_line(capsys):
    def multi_line():
        raise StudyError("first line\nsecond line")

    assert cli.run_cli("prog", multi_line) == 2
    assert capsys.readouterr().err == "prog: error: first line second line\n"

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run_cli("prog", interrupted) == 130
    assert capsys.readouterr().err == "prog: interrupted; rerun with the same --out to resume\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: it keeps its traceback
        cli.run_cli("prog", lambda: 1 // 0)


def test_dask_executor_without_dask_or_scheduler(monkeypatch):
    import builtins

    with runner.dask_executor() as executor:
        assert executor is None
    real_import = builtins.__import__

    def no_dask(name, *args, **kw):
        if name == "distributed":
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(StudyError, match=r"tensornet\[dask\]"):
        with runner.dask_executor(workers=2):
            pass
