"""Human-readable columns (addresses, type and RCODE names) added to integer columns.

Names are computed once per distinct value and joined back, so the cost does not grow with the row
count beyond one polars join or ``replace_strict``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

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
    values = [v for v in codes.unique().to_list() if v is not None]
    labels = pl.Series(name, [str(namer(v)) for v in values], dtype=pl.Categorical)
    position = dict(zip(values, range(len(values)), strict=True))
    index = codes.replace_strict(position, default=None, return_dtype=pl.UInt32)
    return labels.gather(index).alias(name)
