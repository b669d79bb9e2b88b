"""Atomic file writes: readers see the old file or the new one, never half of one.

A result is written to a temporary file in the destination's folder and moved into place with
``os.replace`` (atomic on POSIX and Windows); on any error the temporary file is removed.

Permissions follow the user, as for any other tool: a new file gets ``0o666 & ~umask`` (what
``open(2)``, ``touch`` or Python's ``open`` give it), a replaced file keeps the mode of the file it
replaces. The mode is set on the temporary file before the move, so the final file never has
another one; while it is written the temporary file is private (0600).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "save_figure"]

_NEW_FILE_MODE = 0o666  # what open() asks for; the OS takes the umask off
_PRIVATE = 0o600  # the temporary file while it is written
_TRIES = 100
_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)  # fmt: skip


def _create_temporary(path: Path) -> Path:
    """Create an empty ``.NAME.XXXXXXXX.tmp`` next to ``path`` (exclusively, like ``mkstemp``)."""
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, _FLAGS, _NEW_FILE_MODE))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {path} after {_TRIES} tries")


def _final_mode(path: Path, new_file_mode: int) -> int:
    """The mode of the file ``path`` replaces (permission bits only), else ``new_file_mode``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        return new_file_mode


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The result gets ``0o666 & ~umask`` when ``path`` is new, and keeps the mode of the file it
    replaces otherwise.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        # The umask is process-global and os.umask can only read it by setting it, which races
        # with other threads (and Python has no os.getumask). The temporary file was created with
        # 0o666, so the OS has already applied the umask (and any default ACL of the folder), as
        # open(2) documents: its mode now is the mode a new file gets here.
        new_file_mode = stat.S_IMODE(os.stat(tmp).st_mode)
        os.chmod(tmp, _PRIVATE)
        yield tmp
        os.chmod(tmp, _final_mode(path, new_file_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8), with the permissions of :func:`atomic_path`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write_text(target, "hello")
    >>> target.read_text()
    'hello'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the extension (png, pdf, svg)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path
