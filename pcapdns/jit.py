"""Compiled inner loops: a typed, lazy front for numba's ``njit``, where a per-byte walk dominates.

The fast paths (the pcap record walk, link/IP/UDP classification, the DNS name walk, pairing) are
plain Python loops over numpy arrays, compiled to machine code by numba and cached on disk
(``cache=True``: later runs load the compiled code instead of compiling it).  ``nogil`` lets
polars' threads run meanwhile.

Importing numba and loading the first compiled function cost about 0.4 s, more than a small
capture takes to analyze without them, so nothing is imported until :func:`load` (or the first
call of a compiled function).  Callers with little work run the plain Python function instead
(:func:`interpreted`; the same code, so the same results), unless the compiled code is already
loaded (:func:`loaded`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    import numpy as np

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A", bound="np.ndarray[Any, Any]")

_registered: list[Callable[..., Any]] = []
_loaded = False


def jit(func: F) -> F:
    """Compile ``func`` (nopython, cached, without the GIL) when compiled code is first needed.

    Until then the module attribute is a stand-in that loads everything on its first call; then
    every registered function is replaced, in its module, by its compiled form, so compiled code
    calling another registered function calls compiled code.
    """
    _registered.append(func)
    if _loaded:
        return cast(F, _compile(func))

    @functools.wraps(func)
    def first_call(*args: Any) -> Any:
        load()
        return func.__globals__[func.__name__](*args)

    first_call.py_func = func  # type: ignore[attr-defined]
    return cast(F, first_call)


def _compile(func: Callable[..., Any]) -> Any:
    import numba

    dispatcher = numba.njit(cache=True, nogil=True)(func)
    cache = getattr(dispatcher, "_cache", None)
    if cache is not None and hasattr(cache, "save_overload"):
        cache.save_overload = _never_fails(cache.save_overload)
    return dispatcher


def _never_fails(save: Callable[..., Any]) -> Callable[..., Any]:
    """The on-disk cache is a speed-up, not a duty: a cache that cannot be written (the package
    directory is root's and ``pcapdns live`` has dropped to ``nobody``, a read-only install, a
    full disk) leaves the freshly compiled code in memory, used as usual, instead of failing."""

    @functools.wraps(save)
    def save_or_skip(*args: Any) -> None:
        try:
            save(*args)
        except OSError:
            pass

    return save_or_skip


def load() -> None:
    """Import numba and put the compiled form of every registered function in place."""
    global _loaded
    if _loaded:
        return
    for func in _registered:
        func.__globals__[func.__name__] = _compile(func)
    _loaded = True


def loaded() -> bool:
    return _loaded


def interpreted(func: F) -> F:
    """The plain Python function behind a :func:`jit` function (for small inputs)."""
    return cast(F, getattr(func, "py_func", func))


def writable(array: A) -> A:
    """``array`` as a writable numpy array (copied only if it is not).

    numba compiles a function once per argument type, and a read-only array (polars hands out
    zero-copy views of single-chunk columns) is another type than a writable one: callers pass
    arrays made from tables through here, so that which one arrives never depends on how a table
    happens to be chunked, and no second compilation is needed halfway through a run (``pcapdns
    live`` may no longer be able to read the Python installation by then).
    """
    import numpy as np

    return array if array.flags.writeable else cast(A, np.array(array))
