"""Command-line plumbing shared by the studies: argument checks and the one-line error contract.

Every problem the user can fix (a bad argument, a bad dataset file, a corrupt or foreign file under
``--out``, a run already using ``--out``) ends the study with exactly one line
``PROG: error: ...`` on stderr and exit status 2, before anything under ``--out`` is changed.
Ctrl-C ends it with one line saying how to resume and exit status 130.

Examples
--------
>>> positive_int("3")
3
>>> fraction("0.05")
0.05
>>> int_list("1,2,8")
(1, 2, 8)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import NoReturn

from .data import DEFAULT_VAL_SIZE

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "OneLineParser",
    "StudyError",
    "add_run_arguments",
    "check_run_arguments",
    "count_or_fraction",
    "device",
    "fraction",
    "int_list",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "run_cli",
]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted; rerun with the same --out to resume"


class StudyError(Exception):
    """A problem the user can fix; reported as one line and exit status 2.

    The message should name the argument or file and say what to do about it.
    """


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2).

    argparse prints the whole usage text before its error line; here the error line alone is
    printed, with a pointer to ``--help``.

    Examples
    --------
    >>> p = OneLineParser(prog="demo")
    >>> _ = p.add_argument("--n", type=positive_int)
    >>> p.parse_args(["--n", "2"]).n
    2
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see --help)`` and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type).

    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 1, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (argparse type).

    >>> nonnegative_int("0")
    0
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type), e.g. a learning rate.

    >>> positive_float("1e-3")
    0.001
    """
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (argparse type), e.g. an accuracy drop of 0.01.

    >>> fraction("2")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a fraction between 0 and 1 (0.01 = 1 point), got '2'
    """
    value = float(_number(text, float))
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a fraction between 0 and 1 (0.01 = 1 point), got {text!r}"
        )
    return value


def count_or_fraction(text: str) -> int | float:
    """A validation split (argparse type): a count (an integer >= 1) or a fraction in (0, 1).

    >>> count_or_fraction("500"), count_or_fraction("0.1")
    (500, 0.1)
    >>> count_or_fraction("1.0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a count of images (an integer >= 1) or a fraction \
between 0 and 1, got '1.0'
    """
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue  # not an integer: perhaps a fraction
        fits = value >= 1 if kind is int else 0 < value < 1
        if fits:
            return value
        break  # an integer < 1 or a number outside (0, 1)
    raise argparse.ArgumentTypeError(
        f"must be a count of images (an integer >= 1) or a fraction between 0 and 1, got {text!r}"
    )


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1 (argparse type), e.g. ``"1,2,4"``.

    >>> int_list("1,0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be comma-separated integers >= 1, got '1,0'
    """
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}")
    return values


def device(text: str) -> str:
    """A torch device that exists on this machine (argparse type): ``cpu``, ``cuda``, ``cuda:1``.

    >>> device("cpu")
    'cpu'
    """
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or mps")
    return text


def add_run_arguments(
    parser: argparse.ArgumentParser,
    datasets: Sequence[str],
    default_dataset: str = "digits",
    default_out: str = "runs/STUDY-DATASET-MODEL",
    val_size: bool = False,
) -> None:
    """The arguments every study takes: data, seeds, device, output folder, Dask.

    ``--dataset --data-dir --limit --seed --seeds --device --out --workers --scheduler``, and
    with ``val_size`` ``--val-size`` (a study that takes it must put it into its training key);
    check them together with :func:`check_run_arguments` after parsing.
    """
    import torch

    parser.add_argument("--dataset", default=default_dataset, choices=list(datasets))
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset's standard files (not for the bundled datasets)",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=None, help="use at most this many images per split"
    )
    if val_size:
        parser.add_argument(
            "--val-size",
            type=count_or_fraction,
            default=None,
            metavar="N|F",
            help="validation images carved from the training files of cifar10/cifar100/mnist/"
            "fashion_mnist: a count or a fraction (default 0.1); the bundled datasets are split "
            "60/20/20",
        )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="repeat everything with this many seeds (seed, seed+1, ...): mean and spread",
    )
    parser.add_argument(
        "--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--out", default=None, help=f"output folder (default {default_out})")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="run the parallel part on a local Dask cluster of N worker processes",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the parallel part on a running Dask scheduler, e.g. tcp://host:8786",
    )


def check_run_arguments(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    bundled: Collection[str],
    default_out: str,
) -> str:
    """Check the arguments of :func:`add_run_arguments` together; return the output folder.

    Exits (one line, status 2) for ``--workers`` with ``--scheduler``, ``--data-dir`` or
    ``--val-size`` with a bundled dataset, no ``--data-dir`` for a dataset on disk, and an
    ``--out`` that is a file. Sets ``args.val_size`` (where the parser has it) to the default
    fraction for a dataset on disk, and leaves it None for a bundled one.
    """
    if args.workers is not None and args.scheduler is not None:
        parser.error("give --workers (a local cluster) or --scheduler (a running one), not both")
    if args.dataset in bundled and args.data_dir is not None:
        parser.error(f"--data-dir is not used with --dataset {args.dataset} (it is bundled)")
    if args.dataset not in bundled and args.data_dir is None:
        parser.error(f"--dataset {args.dataset} needs --data-dir, the folder holding its files")
    if getattr(args, "val_size", None) is not None and args.dataset in bundled:
        parser.error(
            f"--val-size is not used with --dataset {args.dataset} (bundled, split 60/20/20)"
        )
    if hasattr(args, "val_size") and args.dataset not in bundled and args.val_size is None:
        args.val_size = DEFAULT_VAL_SIZE
    out = args.out or default_out
    if Path(out).exists() and not Path(out).is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    return out


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run ``body()`` and turn the errors a user can fix into one line on stderr.

    Parameters
    ----------
    prog
        The program name that starts each message, e.g. ``"studies truncation"``.
    body
        The study's work; returns the exit status.

    Returns
    -------
    int
        ``body()``'s status; 2 after a :class:`StudyError`; 130 after Ctrl-C, with the message
        ``interrupted; rerun with the same --out to resume``.

    Examples
    --------
    >>> def broken():
    ...     raise StudyError("--out x: is a file")
    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     code = run_cli("demo", broken)
    >>> code, err.getvalue()
    (2, 'demo: error: --out x: is a file\\n')
    """
    try:
        return body()
    except StudyError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: {INTERRUPTED}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
