"""A resolver with several addresses is one server to the rules that judge servers.

An operator says which addresses belong to one resolver (``--server-group NAME=ADDR,ADDR``: its
IPv4 and IPv6 addresses, a pair behind one anycast name); the rules that learn a server's baseline
and find its episodes (RCODE surges, slow answers, outages, loss, the FORMERR and SERVFAIL causes) then take
the group's queries together, so an event on a dual-stack resolver is one finding naming both
addresses, not one per address.  A finding's ``servers`` stays a list of addresses (the group's
addresses that took part); its summary names the group.  Without groups nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pcapdns.anomalies.config import Thresholds

__all__ = ["addresses", "key_of", "keyed", "label", "numbering", "server_key"]


def _mapping(th: Thresholds) -> dict[str, str]:
    return {address: name for name, members in th.server_groups for address in members}


def key_of(column: str, th: Thresholds) -> pl.Expr:
    """The server an address in ``column`` counts as: its group's name, else the address."""
    text = pl.col(column).cast(pl.String)
    mapping = _mapping(th)
    return text.replace(mapping) if mapping else text


def server_key(address: str, th: Thresholds) -> str:
    """The server one address counts as (what :func:`key_of` makes of a column)."""
    return _mapping(th).get(address, address)


def numbering(servers: pl.Series, th: Thresholds, column: str = "server") -> tuple[pl.Expr, list[str]]:
    """The server keys of the addresses ``servers`` (the distinct values of a table's ``column``),
    sorted, and an expression giving each row of that table its key's number among them.

    A categorical column is numbered by a lookup of its category codes (the codes of a column
    are one mapping for the process: equal codes, equal text), which makes no text per row; a
    long-lived process whose categories hold many more strings than these addresses, or a text
    column, is numbered from the text."""
    present = servers.drop_nulls()
    text = present.cast(pl.String).to_list()
    keys = sorted({server_key(a, th) for a in text})
    codes = present.to_physical().to_list() if isinstance(servers.dtype, pl.Categorical) else []
    if codes and max(codes) < 16 * len(codes) + (1 << 16):
        rank = {k: i for i, k in enumerate(keys)}
        table: list[int | None] = [None] * (max(codes) + 1)
        for code, a in zip(codes, text, strict=True):
            table[code] = rank[server_key(a, th)]
        lookup = pl.Series("number", table, dtype=pl.UInt32)
        return pl.lit(lookup).gather(pl.col(column).to_physical()), keys
    number = key_of(column, th).replace_strict(
        keys, list(range(len(keys))), default=None, return_dtype=pl.UInt32
    )
    return number, keys


def keyed(t: pl.DataFrame, th: Thresholds) -> pl.DataFrame:
    """``t`` with ``server`` the server key (see :func:`key_of`) and ``address`` the address."""
    t = t.with_columns(pl.col("server").cast(pl.String).alias("address"))
    # without groups the key is the address: the same column, not a second copy of its text
    return t.with_columns(
        key_of("address", th).alias("server") if th.server_groups else pl.col("address").alias("server")
    )


def addresses(keys: Sequence[str], rows: pl.DataFrame, th: Thresholds) -> list[str]:
    """The addresses a finding names for the server ``keys``: the keys themselves without groups,
    else the addresses in ``rows`` (the finding's transactions, with an ``address`` column)."""
    if not th.server_groups:
        return list(keys)
    return sorted({str(a) for a in rows.get_column("address").unique().to_list() if a is not None})


def label(key: str, rows: pl.DataFrame, th: Thresholds) -> str:
    """How a summary names the server ``key``: a group as ``NAME (ADDR, ADDR)``, the addresses of
    it that ``rows`` hold; an address as itself."""
    if key not in {name for name, _ in th.server_groups}:
        return key
    mine = rows.filter(pl.col("server") == key).get_column("address").unique().sort().to_list()
    return f"{key} ({', '.join(str(a) for a in mine)})" if mine else key
