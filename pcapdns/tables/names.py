"""Human-readable columns (addresses, type and RCODE names) added to integer columns.

Names are computed once per distinct value and joined back, so the cost does not grow with the row
count beyond one polars join or ``replace_strict``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import numpy as np
import polars as pl

_V4_PREFIX = 0x0000FFFF00000000


def address_text(hi: int, lo: int) -> str:
    """The two 64-bit halves of an address (IPv4 mapped into ``::ffff:0:0/96``) as text."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def named(df: pl.DataFrame, column: str, namer: Callable[[int], object], name: str) -> pl.Series:
    """Categorical names of integer ``column`` of ``df`` through ``namer`` (nulls stay null).

    Each distinct value is named once; the rows gather category codes, never build strings.
    """
    codes = df.get_column(column)
    if codes.dtype in (pl.UInt8, pl.UInt16):
        # small codes (types, RCODEs, file ids): the values present counted, each named once
        # into a lookup by code (null for the absent), which the rows gather from in one step
        present = np.flatnonzero(np.bincount(codes.drop_nulls().to_numpy(), minlength=1))
        lookup: list[str | None] = [None] * (len(present) and int(present[-1]) + 1)
        for v in present.tolist():
            lookup[v] = str(namer(v))
        return pl.Series(name, lookup, dtype=pl.Categorical).gather(codes)
    values = sorted(v for v in codes.unique().to_list() if v is not None)
    position = dict(zip(values, range(len(values)), strict=True))
    index = codes.replace_strict(position, default=None, return_dtype=pl.UInt32)
    labels = pl.Series(name, [str(namer(v)) for v in values], dtype=pl.Categorical)
    return labels.gather(index).alias(name)
