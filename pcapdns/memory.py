"""Handing freed memory back to the operating system between the steps of an analysis."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


@cache
def _trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_memory() -> None:
    """Hand the C heap's freed pages back to the OS (glibc only; a no-op elsewhere).

    numpy's arrays and the compiled code's are allocated by the C library's ``malloc``, whose
    heap keeps freed blocks mapped (only its top is given back by itself): a large array freed
    in one step leaves its pages counted in the resident size while the next step allocates
    anew, in polars' allocator or above it.  ``malloc_trim`` returns every free page of the heap
    (as Dask's workers do); it costs well under a millisecond when there is little to return.
    """
    trim = _trim()
    if trim is not None:
        trim(0)
