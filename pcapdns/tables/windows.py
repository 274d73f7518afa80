"""The ``windows`` table: traffic per time window and per server, built lazily from transactions.

A window (``--window`` seconds, 60 by default: the windows the anomaly engine uses too) starts at
a whole multiple of its length since the Unix epoch (60 s windows start on the minute); a
transaction belongs to the window holding its query time.  Only windows in which a server received
at least one query have a row (the table is sparse).  The RCODE columns are a fixed set, so the
schema is the same whatever the traffic: responses with any other RCODE count in ``other``.
"""

from __future__ import annotations

import polars as pl

from pcapdns.errors import UsageError
from pcapdns.schema import EVIDENCE

NAMED_RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP")

WINDOWS: dict[str, pl.DataType] = {
    "window_start": pl.Datetime("us", "UTC"),
    "window_end": pl.Datetime("us", "UTC"),
    "server": pl.String(),
    "queries": pl.UInt32(),
    "answered": pl.UInt32(),
    "unanswered": pl.UInt32(),
    "retransmissions": pl.UInt32(),
    **{name: pl.UInt32() for name in NAMED_RCODES},
    "other": pl.UInt32(),
    "p50_ms": pl.Float64(),
    "p95_ms": pl.Float64(),
    "p99_ms": pl.Float64(),
    "evidence": pl.List(EVIDENCE),
}


def duration(window_s: float) -> str:
    """``window_s`` seconds as a polars duration (whole microseconds), e.g. ``60000000us``."""
    micros = round(window_s * 1_000_000)
    if micros <= 0:
        raise UsageError(f"--window {window_s}: a window must last at least a microsecond")
    return f"{micros}us"


def evidence(order: str, frame: str) -> pl.Expr:
    """An aggregation: the first and last packet of a group (by ``order``) as ``file:frame`` items."""
    item = pl.struct(pl.col("file").cast(pl.String).alias("file"), pl.col(frame).alias("frame"))
    ordered = item.sort_by([order, pl.col("file").cast(pl.String), frame])
    return pl.concat_list(ordered.first(), ordered.last()).list.unique(maintain_order=True).alias("evidence")


def latency_percentiles() -> list[pl.Expr]:
    ms = pl.col("rtt") * 1000
    # rounded to the nanosecond: float noise of the interpolation does not reach the exports
    return [
        ms.quantile(q, interpolation="linear").round(6).alias(f"p{int(q * 100)}_ms")
        for q in (0.50, 0.95, 0.99)
    ]


def build_windows(transactions: pl.LazyFrame, window_s: float = 60.0) -> pl.LazyFrame:
    """One row per (window, server) with counts, RCODE mix and latency percentiles (schema ``WINDOWS``)."""
    every = duration(window_s)
    rcode = pl.col("rcode_name").cast(pl.String)
    return (
        transactions.with_columns(
            pl.col("ts").dt.truncate(every).alias("window_start"), pl.col("server").cast(pl.String)
        )
        .group_by("window_start", "server")
        .agg(
            pl.len().alias("queries"),
            (pl.col("status") == "answered").sum().alias("answered"),
            (pl.col("status") != "answered").sum().alias("unanswered"),
            pl.col("retransmissions").sum().alias("retransmissions"),
            *[(rcode == name).sum().alias(name) for name in NAMED_RCODES],
            (rcode.is_not_null() & ~rcode.is_in(NAMED_RCODES)).sum().alias("other"),
            *latency_percentiles(),
            evidence("ts", "query_frame"),
        )
        .with_columns(pl.col("window_start").dt.offset_by(every).alias("window_end"))
        .sort("window_start", "server")
        .select(pl.col(name).cast(dtype) for name, dtype in WINDOWS.items())
    )
