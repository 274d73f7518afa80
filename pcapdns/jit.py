"""Compiled inner loops: a typed front for numba's ``njit``, used where a per-byte walk dominates.

The fast paths (the DNS name walk, link/IP/UDP classification, the pcap record walk) are plain
Python loops over numpy arrays, compiled to machine code by numba the first time they run and cached
on disk (``cache=True``: later runs load the compiled code in milliseconds).  ``nogil`` lets polars'
threads run meanwhile.  Every compiled function is also an ordinary Python function: with
``NUMBA_DISABLE_JIT=1`` the same code runs interpreted, for debugging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def jit(func: F) -> F:
    """Compile ``func`` in nopython mode, cached on disk, without the GIL."""
    return cast(F, numba.njit(cache=True, nogil=True, boundscheck=False)(func))
