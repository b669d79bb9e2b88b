"""Reading pickles that may have been crafted: only an allow-list of globals is ever resolved.

``pickle.load`` resolves any global a file names (``os.system``, ``builtins.eval``, ...) and
calls it, so reading an untrusted pickle runs whatever its author chose. :func:`restricted_load`
resolves only the globals it is given; anything else stops the load with
:class:`RefusedPickle` before the global is looked up, so nothing of the file's choosing runs.

:data:`NUMPY_DATA` allows what the CIFAR "python version" batches hold: dicts, lists, bytes,
str, ints and numpy arrays with their dtypes (pickled by Python 2 or 3, numpy 1 or 2).

Examples
--------
>>> import io, os, pickle
>>> class Evil:
...     def __reduce__(self):
...         return (os.system, ("echo owned",))
>>> restricted_load(io.BytesIO(pickle.dumps({"data": [1, 2]})), NUMPY_DATA)
{'data': [1, 2]}
>>> restricted_load(io.BytesIO(pickle.dumps(Evil())), NUMPY_DATA)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
studies.common.safe_pickle.RefusedPickle: the file names the global posix.system, which is not ...
"""

from __future__ import annotations

import pickle
from collections.abc import Collection
from typing import IO, Any

__all__ = ["NUMPY_DATA", "RefusedPickle", "restricted_load"]

# The globals numpy's ndarray/dtype/scalar pickling refers to (numpy 1: numpy.core, numpy 2:
# numpy._core; protocol 5 uses _frombuffer), and _codecs.encode, which Python 3 uses for bytes in
# protocol 2. Each only builds arrays, dtypes or scalars from data; none calls anything it names.
NUMPY_DATA: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class RefusedPickle(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list; nothing it names was looked up."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: Collection[tuple[str, str]], **kw: Any) -> None:
        super().__init__(file, **kw)
        self._allowed = frozenset(allowed)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise RefusedPickle(f"the file names the global {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def restricted_load(
    file: IO[bytes], allowed: Collection[tuple[str, str]], encoding: str = "ASCII"
) -> Any:
    """Unpickle ``file``, resolving only the ``(module, name)`` globals in ``allowed``.

    Parameters
    ----------
    file
        A binary file object.
    allowed
        The globals the file may name, e.g. :data:`NUMPY_DATA`.
    encoding
        How Python 2 ``str`` objects are decoded (``"bytes"`` keeps them as bytes, as the CIFAR
        batches need).

    Raises
    ------
    RefusedPickle
        The file names any other global (a class, a function): it is refused, not called.
    pickle.UnpicklingError, EOFError, ValueError
        The file is not a (complete) pickle.
    """
    return _Restricted(file, allowed, encoding=encoding).load()
