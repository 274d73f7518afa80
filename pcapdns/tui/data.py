"""What the overview screen draws, aggregated by polars off the UI thread (no textual here).

:func:`build_overview` runs in the analysis worker right after :func:`pcapdns.pipeline.analyze`
(and again when the chart's width changes), so the UI thread only draws finished numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pcapdns.tables.summary import Analysis, summary

__all__ = ["OUTCOMES", "Health", "Incident", "Overview", "bucket_us", "build_overview", "quality_line"]

# Series of the queries-per-second chart, bottom to top.
OUTCOMES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "other", "unanswered")
_US = 1_000_000
_NICE_US = [
    int(s * _US)
    for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
] + [h * 3600 * _US for h in (2, 3, 6, 12, 24, 48, 168)]


@dataclass(frozen=True, slots=True)
class Health:
    """One row of the top servers / clients tables."""

    who: str
    queries: int
    answer_rate: float
    p95_ms: float | None
    servfail: int


@dataclass(frozen=True, slots=True)
class Incident:
    """One finding of the anomaly engine, placed on the timeline."""

    rank: int
    severity: str
    kind: str
    start_us: int
    end_us: int
    summary: str


@dataclass(slots=True)
class Overview:
    quality: list[tuple[str, str]]  # (text, style) parts of the capture quality line
    totals: dict[str, Any]
    start_us: int = 0
    bucket_us: int = _US
    buckets: int = 0
    qps: dict[str, list[float]] = field(default_factory=dict)  # OUTCOMES -> per bucket
    latency: list[tuple[float, float, float] | None] = field(default_factory=list)  # p50, p95, p99 ms
    rcodes: list[tuple[str, int]] = field(default_factory=list)
    qtypes: list[tuple[str, int]] = field(default_factory=list)
    servers: list[Health] = field(default_factory=list)
    clients: list[Health] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)

    @property
    def end_us(self) -> int:
        return self.start_us + self.buckets * self.bucket_us


def bucket_us(span_us: int, columns: int) -> int:
    """The smallest round bucket width that draws ``span_us`` in at most ``columns`` columns."""
    for b in _NICE_US:
        if math.ceil((span_us + 1) / b) <= max(columns, 1):
            return b
    return max(_NICE_US[-1], math.ceil((span_us + 1) / max(columns, 1)))


def _outcome() -> pl.Expr:
    rc = pl.col("rcode_name").cast(pl.String)
    return (
        pl.when(pl.col("status") != "answered")
        .then(pl.lit("unanswered"))
        .when(rc.is_in(["NOERROR", "NXDOMAIN", "SERVFAIL"]))
        .then(rc)
        .otherwise(pl.lit("other"))
        .alias("outcome")
    )


def _health(t: pl.DataFrame, key: str, top: int) -> list[Health]:
    rows = (
        t.group_by(key)
        .agg(
            pl.len().alias("queries"),
            (pl.col("status") == "answered").mean().alias("answer_rate"),
            (pl.col("rtt") * 1000).quantile(0.95, interpolation="linear").alias("p95_ms"),
            (pl.col("rcode_name") == "SERVFAIL").sum().alias("servfail"),
        )
        .sort(["queries", key], descending=[True, False])
        .head(top)
    )
    return [Health(str(w), int(q), float(r), p, int(s)) for w, q, r, p, s in rows.iter_rows()]


def _counts(t: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    rows = (
        t.filter(pl.col(column).is_not_null())
        .group_by(column)
        .len()
        .sort(["len", column], descending=[True, False])
    )
    return [(str(k), int(n)) for k, n in rows.iter_rows()]


def quality_line(a: Analysis, s: dict[str, Any]) -> list[tuple[str, str]]:
    """The capture in one line: files, frames, span, and what could make its figures wrong."""
    parts: list[tuple[str, str]] = []
    names = ", ".join(os.path.basename(c.path) for c in a.captures)
    frames = sum(c.frames for c in a.captures)
    parts.append((names, "bold"))
    parts.append((f"  {frames:,} frames  {s['dns_messages']:,} DNS messages", ""))
    span = s["time_span"]
    if span["first"]:
        parts.append((f"  {span['first'][:19].replace('T', ' ')} .. {span['last'][11:19]} UTC", ""))
    issues = sum(s["decode_issues"].values())
    parts.append((f"  decode issues {issues:,}", "yellow" if issues else "green"))
    parts.append((f"  malformed {s['malformed']:,}", "yellow" if s["malformed"] else "green"))
    drops = sum(c.interface_drops or 0 for c in a.captures)
    if drops:
        parts.append((f"  capture dropped {drops:,}", "red"))
    if s["queries"] and not s["responses"]:
        parts.append(("  queries only: one direction captured?", "yellow"))
    elif s["responses"] and not s["queries"]:
        parts.append(("  responses only: one direction captured?", "yellow"))
    return parts


def _incidents(anomalies: pl.DataFrame) -> list[Incident]:
    rows = anomalies.sort("rank").select(
        "rank",
        pl.col("severity").cast(pl.String),
        pl.col("kind").cast(pl.String),
        pl.col("start").dt.epoch("us"),
        pl.col("end").dt.epoch("us"),
        "summary",
    )
    return [
        Incident(int(r), str(sev), str(k), int(s or 0), int(e or s or 0), str(text or ""))
        for r, sev, k, s, e, text in rows.iter_rows()
    ]


def build_overview(a: Analysis, columns: int = 100, top: int = 6) -> Overview:
    """Every figure of the overview, with time buckets sized for ``columns`` chart columns."""
    s = summary(a)
    ov = Overview(quality=quality_line(a, s), totals=s)
    t = a.transactions
    ov.rcodes = _counts(t, "rcode_name")
    ov.qtypes = _counts(t, "qtype_name")
    ov.servers = _health(t, "server", top)
    ov.clients = _health(t, "client", top)
    ov.incidents = _incidents(a.anomalies)
    if t.height == 0:
        return ov
    us = pl.col("ts").dt.epoch("us")
    first, last = t.select(us.min().alias("first"), us.max().alias("last")).row(0)
    ov.bucket_us = bucket_us(int(last) - int(first), columns)
    ov.start_us = int(first) // ov.bucket_us * ov.bucket_us
    ov.buckets = (int(last) - ov.start_us) // ov.bucket_us + 1
    keyed = t.select(
        ((pl.col("ts").dt.epoch("us") - ov.start_us) // ov.bucket_us).cast(pl.Int64).alias("b"),
        _outcome(),
        (pl.col("rtt") * 1000).alias("ms"),
    )
    grid = pl.DataFrame({"b": pl.arange(0, ov.buckets, eager=True).cast(pl.Int64)})
    counts = keyed.group_by("b", "outcome").len().pivot(on="outcome", index="b", values="len")
    counts = grid.join(counts, on="b", how="left").sort("b").fill_null(0)
    seconds = ov.bucket_us / _US
    for name in OUTCOMES:
        col = counts.get_column(name) if name in counts.columns else pl.Series([0] * ov.buckets)
        ov.qps[name] = [n / seconds for n in col.to_list()]
    lat = (
        keyed.filter(pl.col("ms").is_not_null())
        .group_by("b")
        .agg(
            pl.col("ms").quantile(q, interpolation="linear").alias(f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        )
    )
    lat = grid.join(lat, on="b", how="left").sort("b")
    ov.latency = [
        None if p50 is None else (float(p50), float(p95), float(p99))
        for p50, p95, p99 in lat.select("p50", "p95", "p99").iter_rows()
    ]
    return ov
