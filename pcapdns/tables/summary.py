"""The result of an analysis and every aggregate drawn from it (the ``--json`` summary included).

The ``--json`` summary is a contract (documented in the README): its keys are stable and its
counts are integers.  Conservation holds by construction and is tested::

    queries   = answered + unanswered + retransmissions
    responses = answered + duplicate_responses + orphan_responses
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.anomalies.inputs import issue_totals
from pcapdns.dns.codes import rcode_name, rrtype_name
from pcapdns.jit import writable
from pcapdns.model import CaptureInfo
from pcapdns.schema import ANOMALIES, DECODE_ISSUES, MALFORMED, ROLES
from pcapdns.tables.kernels import (
    NO_QTYPE_AT,
    OPCODE_AT,
    QR_AT,
    QTYPE_AT,
    RCODE_AT,
    ROLE_AT,
    TRANSPORT_AT,
    count_keys,
)

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
# What the summary counts per message (the rest of a message lives in its transaction's row).
COUNTED = ("role", "qr", "rcode", "qtype", "opcode", "transport", "malformed")


def count_messages(m: pl.DataFrame, *, compiled: bool = True) -> pl.DataFrame:
    """``m``'s messages counted by the COUNTED columns, in a canonical row order.

    The columns are packed into one integer per message (fields of disjoint bits) and polars
    counts those: a group-by on seven columns of millions of rows costs several times the time
    and memory.  The few distinct keys are unpacked in Python.  The packing is compiled (one
    pass); ``compiled=False`` packs with a polars expression instead (a few messages: not worth
    loading compiled code), the same bits (tested).
    """
    keys = pl.DataFrame({"key": _count_keys(m)}) if compiled else m.select(_count_key_expr())
    counted = keys.group_by("key").agg(pl.len().alias("count"))
    rows = [
        (
            ROLES[k >> ROLE_AT],
            bool(k >> QR_AT & 1),
            k >> RCODE_AT & 0xFFFF,
            None if k >> NO_QTYPE_AT & 1 else k >> QTYPE_AT & 0xFFFF,
            k >> OPCODE_AT & 0xFF,
            k >> TRANSPORT_AT & 0xFF,
            bool(k & 1),
            n,
        )
        for k, n in counted.iter_rows()
    ]
    schema = {c: m.schema[c] for c in COUNTED} | {"count": pl.UInt64()}
    return pl.DataFrame(rows, schema=schema, orient="row").sort(COUNTED, nulls_last=True)


def _count_keys(m: pl.DataFrame) -> npt.NDArray[Any]:
    def col(name: str, fill: object) -> npt.NDArray[Any]:
        c = m.get_column(name)
        return writable((c.fill_null(fill) if c.null_count() else c).to_numpy())

    qtype = m.get_column("qtype")
    return count_keys(
        writable(m.get_column("role").to_physical().cast(pl.UInt8).to_numpy()),
        col("qr", False),
        col("rcode", 0),
        writable(qtype.fill_null(0).to_numpy()),
        writable(qtype.is_null().to_numpy()),
        col("opcode", 0),
        col("transport", 0),
        col("malformed", False),
    )


def _count_key_expr() -> pl.Expr:
    """:func:`~pcapdns.tables.kernels.count_keys` as a polars expression."""
    u64 = pl.UInt64
    qtype = pl.col("qtype")
    return (
        pl.col("role").to_physical().cast(u64) * (1 << ROLE_AT)
        + pl.col("qr").cast(u64) * (1 << QR_AT)
        + pl.col("rcode").cast(u64) * (1 << RCODE_AT)
        + qtype.fill_null(0).cast(u64) * (1 << QTYPE_AT)
        + qtype.is_null().cast(u64) * (1 << NO_QTYPE_AT)
        + pl.col("opcode").cast(u64) * (1 << OPCODE_AT)
        + pl.col("transport").cast(u64) * (1 << TRANSPORT_AT)
        + pl.col("malformed").cast(u64)
    ).alias("key")


def add_counts(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Message counts of several parts added up (same canonical order)."""
    both = pl.concat(parts)
    return both.group_by(COUNTED).agg(pl.col("count").sum()).sort(COUNTED, nulls_last=True)


@dataclass(slots=True)
class TransactionTotals:
    """What the summary reads of the transactions, aggregated as they settled (the table itself
    not kept: ``analyze --json``)."""

    statuses: dict[str, int]
    latency_ms: dict[str, float | int | None]


@dataclass(slots=True)
class Analysis:
    """Everything one run of the pipeline produced.

    The transactions table is ``table``: in memory, or (an analysis in steps) a lazy scan of the
    temporary store that ``store`` keeps open.  :meth:`scan` reads it lazily (what the summaries,
    exports and queries do: their memory is bounded by what they aggregate or write, not by the
    table); :attr:`transactions` is the whole table in memory (read from the store at the first
    use, then kept).  :meth:`close` removes the store (it also goes at exit, or with the analysis).
    """

    captures: list[CaptureInfo]
    # DNS messages counted by the COUNTED columns: one row per distinct combination, with ``count``
    # (everything else about a message lives in its transaction's row)
    message_counts: pl.DataFrame
    table: pl.DataFrame | pl.LazyFrame
    malformed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MALFORMED))
    # the first examples of each decode issue reason (pcapdns.model.ISSUE_EXAMPLES per file and reason)
    issues: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DECODE_ISSUES))
    # every decode issue, counted per file and reason (schema ISSUE_COUNTS); None: ``issues`` has them all
    issue_counts: pl.DataFrame | None = None
    counters: Counter[str] = field(default_factory=Counter)
    timeout_s: float = 5.0
    addresses: list[str] = field(default_factory=list)  # every address seen, as text, in numeric order
    anomalies: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ANOMALIES))
    # set when the transactions were aggregated as they settled; ``transactions`` is then empty
    transaction_totals: TransactionTotals | None = None
    # what keeps the store of a lazy ``table`` (a pcapdns.spill.SpillStore: close() removes it)
    store: Any = None

    @property
    def files(self) -> list[str]:
        return [c.path for c in self.captures]

    @property
    def transactions(self) -> pl.DataFrame:
        """The whole transactions table in memory (read from the store once, then kept)."""
        if isinstance(self.table, pl.LazyFrame):
            self.table = collect(self.table)
        return self.table

    @property
    def lazy(self) -> bool:
        """Whether the transactions table is still in the store (not read into memory)."""
        return isinstance(self.table, pl.LazyFrame)

    def scan(self) -> pl.LazyFrame:
        """The transactions table as a lazy frame (over the store, or over the table in memory)."""
        return self.table.lazy()

    def collect(self, frame: pl.LazyFrame) -> pl.DataFrame:
        """``frame`` (a query over :meth:`scan`) collected: by the streaming engine when the
        table is in the store, by the default engine when it is in memory already."""
        return collect(frame) if self.lazy else frame.collect()

    def loaded(self) -> Analysis:
        """This analysis with its table in memory and the store removed (to be sent elsewhere)."""
        self.transactions  # noqa: B018 - read into memory
        self.close()
        return self

    def close(self) -> None:
        """Remove the temporary store (a lazy table can no longer be read: load it first)."""
        if self.store is not None:
            self.store.close()
            self.store = None


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """``frame`` collected by polars' streaming engine (batch by batch: the peak is what the
    query keeps, not what it reads)."""
    return frame.collect(engine="streaming")


def iso(ts_ns: int | None) -> str | None:
    """ISO 8601 UTC with microseconds, e.g. ``2024-03-01T10:00:00.000123Z``."""
    if ts_ns is None:
        return None
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns // 1000:06d}Z"


def _named_counts(df: pl.DataFrame, column: str, namer: Any) -> dict[str, int]:
    counts = df.filter(pl.col(column).is_not_null()).group_by(column).agg(pl.col("count").sum()).sort(column)
    return {namer(v): int(n) for v, n in counts.iter_rows()}


def latency_ms(transactions: pl.DataFrame) -> dict[str, float | int | None]:
    """Latency statistics of the ``rtt`` column (seconds; null without a response), in ms.

    The percentiles are polars' ``quantile(q, interpolation="linear")`` of the values, worked
    out from the two order statistics around ``q * (n - 1)`` found by one partial sort (the same
    arithmetic, so the same figures; polars sorts once per percentile, several times slower).
    """
    ms = (transactions.get_column("rtt") * 1000).drop_nulls().to_numpy()
    n = len(ms)
    stats: dict[str, float | int | None] = {"count": n}
    if n == 0:
        stats.update({"min": None, **{name: None for name, _ in PERCENTILES}, "max": None})
        return stats
    ranks = sorted({r for _, q in PERCENTILES for r in (math.floor(q * (n - 1)), math.ceil(q * (n - 1)))})
    ordered = np.partition(ms, ranks)
    stats["min"] = round(float(ms.min()), 3)
    for name, q in PERCENTILES:
        index = q * (n - 1)
        below, above = ordered[math.floor(index)], ordered[math.ceil(index)]
        stats[name] = round(float(below + (above - below) * (index - math.floor(index))), 3)
    stats["max"] = round(float(ms.max()), 3)
    return stats


def _latency_ms(a: Analysis) -> dict[str, float | int | None]:
    if not a.lazy:
        return latency_ms(a.transactions)
    from pcapdns.tables.latency import latency_ms_lazy  # (it imports this module)

    return latency_ms_lazy(a.scan().select("rtt"))


def summary(a: Analysis) -> dict[str, Any]:
    """The ``--json`` summary."""
    m = a.message_counts

    def total(df: pl.DataFrame) -> int:
        return int(df.get_column("count").sum())

    def counted_by(df: pl.DataFrame, column: str) -> list[tuple[Any, int]]:
        rows = df.group_by(column).agg(pl.col("count").sum()).sort(column).iter_rows()
        return [(v, int(n)) for v, n in rows]

    roles = {str(r): n for r, n in counted_by(m, "role")}
    totals = a.transaction_totals
    if totals is None:
        status = a.collect(a.scan().group_by("status").len())
        statuses = {str(s): int(n) for s, n in status.iter_rows()}
    else:
        statuses = totals.statuses
    queries = m.filter(~pl.col("qr"))
    responses = m.filter(pl.col("qr"))
    malformed_reasons = (
        a.malformed.unique(["file_id", "frame", "idx", "reason"]).group_by("reason").len().sort("reason")
    )
    issues = issue_totals(a.issues, a.issue_counts).group_by("reason").agg(pl.col("count").sum())
    issues = issues.sort("reason")
    firsts = [c.first_ts_ns for c in a.captures if c.first_ts_ns is not None]
    lasts = [c.last_ts_ns for c in a.captures if c.last_ts_ns is not None]
    unanswered_timeout = statuses.get("unanswered", 0)
    capture_ended = statuses.get("capture_ended", 0)
    return {
        "frames": sum(c.frames for c in a.captures),
        "dns_messages": total(m),
        "queries": total(queries),
        "responses": total(responses),
        "answered": statuses.get("answered", 0),
        "unanswered": unanswered_timeout + capture_ended,
        "unanswered_by_reason": {"timeout": unanswered_timeout, "capture_ended": capture_ended},
        "orphan_responses": roles.get("orphan_response", 0),
        "retransmissions": roles.get("retransmission", 0),
        "duplicate_responses": roles.get("duplicate_response", 0),
        "malformed": total(m.filter(pl.col("malformed"))),
        "malformed_reasons": {str(r): int(n) for r, n in malformed_reasons.iter_rows()},
        "rcodes": _named_counts(responses, "rcode", rcode_name),
        # An UPDATE's first section is the zone, not a question (RFC 2136 2.3): not a QTYPE.
        "qtypes": _named_counts(queries.filter(pl.col("opcode") != 5), "qtype", rrtype_name),
        "transports": {("tcp" if t == 6 else "udp"): n for t, n in reversed(counted_by(m, "transport"))},
        "latency_ms": _latency_ms(a) if totals is None else totals.latency_ms,
        "decode_issues": {str(r): int(n) for r, n in issues.iter_rows()},
        "time_span": {
            "first": iso(min(firsts) if firsts else None),
            "last": iso(max(lasts) if lasts else None),
        },
    }


# Up to this many servers, their latency percentiles are picked per server from its answers by a
# partial sort (numpy), instead of polars' per-group quantiles (a sort of each group's values).
_PICKED_SERVERS = 64


def servers(a: Analysis) -> pl.DataFrame:
    """Health per server: queries, answer rate, RCODE mix and latency percentiles (the median and
    the 95th percentile by polars' default ``quantile``: the nearest rank)."""
    ms = pl.col("rtt") * 1000
    counts = [
        pl.len().alias("queries"),
        (pl.col("status") == "answered").sum().alias("answered"),
        (pl.col("status") != "answered").sum().alias("unanswered"),
        (pl.col("rcode_name") == "SERVFAIL").sum().alias("servfail"),
        (pl.col("rcode_name") == "NXDOMAIN").sum().alias("nxdomain"),
        (pl.col("rcode_name") == "REFUSED").sum().alias("refused"),
    ]
    if a.lazy:
        from pcapdns.tables.latency import nearest_by_group  # (it imports this module)

        # the counts by a streaming group-by; the percentiles in memory bounded by a few bins of
        # latencies, not every server's (polars' per-group quantile holds them all)
        per = a.collect(a.scan().group_by("server").agg(*counts, ms.max().alias("max_ms")))
        picked = nearest_by_group(a.scan().select("server", ms.alias("ms")), (0.5, 0.95))
        picked = picked.rename({"q0": "p50_ms", "q1": "p95_ms"})
        per = per.join(picked, on="server", how="left", nulls_equal=True)
        per = per.select("server", *(c.meta.output_name() for c in counts), "p50_ms", "p95_ms", "max_ms")
    else:
        per = a.transactions.group_by("server").agg(*counts, ms.max().alias("max_ms"))
        if per.height <= _PICKED_SERVERS:
            per = _with_percentiles(per, a.transactions)
        else:
            quantiles = a.transactions.group_by("server").agg(
                ms.quantile(0.5).alias("p50_ms"), ms.quantile(0.95).alias("p95_ms")
            )
            per = per.join(quantiles, on="server", how="left", nulls_equal=True)
        per = per.select("server", *(c.meta.output_name() for c in counts), "p50_ms", "p95_ms", "max_ms")
    return per.with_columns((pl.col("answered") / pl.col("queries")).alias("answer_rate")).sort(
        ["queries", "server"], descending=[True, False]
    )


def _nearest(values: npt.NDArray[np.float64], q: float) -> float | None:
    """polars' ``quantile(q)`` (the nearest rank: ``q * (n - 1)`` rounded half up) of ``values``."""
    if len(values) == 0:
        return None
    rank = math.floor(q * (len(values) - 1) + 0.5)
    return float(np.partition(values, rank)[rank])


def _with_percentiles(per: pl.DataFrame, t: pl.DataFrame) -> pl.DataFrame:
    """``per`` (a row per server of ``t``) with each server's ``p50_ms`` and ``p95_ms`` of its
    answers, each picked from that server's latencies by a partial sort."""
    answered = t.select("server", (pl.col("rtt") * 1000).alias("ms")).filter(pl.col("ms").is_not_null())
    physical = answered.get_column("server").to_physical()
    null = physical.is_null().to_numpy()
    code = physical.fill_null(0).to_numpy()
    ms = answered.get_column("ms").to_numpy()
    p50: list[float | None] = []
    p95: list[float | None] = []
    for server in per.get_column("server").to_physical().to_list():
        mine = ms[null if server is None else (code == server) & ~null]
        p50.append(_nearest(mine, 0.5))
        p95.append(_nearest(mine, 0.95))
    return per.with_columns(
        pl.Series("p50_ms", p50, dtype=pl.Float64), pl.Series("p95_ms", p95, dtype=pl.Float64)
    )


def top_qnames_by_rcode(a: Analysis, per_rcode: int = 5) -> pl.DataFrame:
    """The most frequent names per non-NOERROR RCODE (most transactions first, then by name, a
    missing name first)."""
    counts = a.collect(
        a.scan()
        .select("rcode_name", "qname")
        .filter(pl.col("rcode_name").is_not_null() & (pl.col("rcode_name") != "NOERROR"))
        .group_by("rcode_name", "qname")
        .len()
    )
    # the top of each RCODE picked before sorting: a flood of never-repeating names would
    # otherwise sort hundreds of thousands of names to show five
    top = counts.group_by("rcode_name").agg(
        pl.col("qname", "len").top_k_by(
            ["len", pl.col("qname").is_not_null(), "qname"], per_rcode, reverse=[False, True, True]
        )
    )
    return (
        top.explode("qname", "len")
        .sort(["rcode_name", "len", "qname"], descending=[False, True, False])
        .select(counts.columns)
    )


def unanswered_by_server(a: Analysis) -> pl.DataFrame:
    return a.collect(
        a.scan()
        .select("server", "status")
        .filter(pl.col("status") != "answered")
        .group_by("server", "status")
        .len()
        .sort(["len", "server"], descending=[True, False])
    )


def rcodes_over_time(a: Analysis, every: str = "1m") -> pl.DataFrame:
    """Responses per RCODE per time window (windows start at whole multiples of ``every``)."""
    counted = a.collect(
        a.scan()
        .filter(pl.col("rcode_name").is_not_null())
        .group_by(pl.col("ts").dt.truncate(every).alias("window"), "rcode_name")
        .len()
    )
    if counted.height == 0:
        return pl.DataFrame(schema={"window": pl.Datetime("us", "UTC")})
    return counted.pivot(on="rcode_name", index="window", values="len").fill_null(0).sort("window")
