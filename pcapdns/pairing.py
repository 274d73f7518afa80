"""Pair every query with its response.

The rules (RFC 1035 gives the ID; the rest is what resolvers and Zeek do):

* A response matches an outstanding query with the same transport, client address and port, server
  address and port, DNS ID and question (name compared case-insensitively, type, class).  A
  response with no question (FORMERR answers often have none) matches the oldest outstanding query
  with the same flow and ID.
* A query repeated (same flow, ID and question) while the earlier one is outstanding is a
  ``retransmission`` of it.  A query stays outstanding until answered or ``timeout`` after its last
  transmission; then it is ``unanswered``, or ``capture_ended`` if that deadline lies after the
  capture's last frame.
* A response arriving when nothing is outstanding is a ``duplicate_response`` if its transaction was
  answered within ``timeout`` before, else an ``orphan_response`` (late answers included).
* Latency is measured from the transaction's first query to its response.

The common case -- a key seen exactly once (a lone query or response) or exactly twice as a query
followed by its response within the timeout -- is decided with polars window expressions over all
messages at once.  Every other key (retransmissions, duplicates, reused IDs, question-less
responses) goes through :class:`_Matcher`, a small explicit state machine; a test checks that the
machine alone gives the same answer on whole captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pcapdns.schema import LINKS, ROLE, STATUS

FLOW = ["transport", "c_hi", "c_lo", "c_port", "s_hi", "s_lo", "s_port", "id"]
QUESTION = ["qkey", "qtype", "qclass"]
KEY = FLOW + QUESTION
ORDER = ["ts_ns", "file_id", "frame", "idx"]


@dataclass(slots=True)
class Paired:
    """Messages in time order with ``mi``, ``role``, ``txn`` and flow columns; one link per transaction."""

    messages: pl.DataFrame
    links: pl.DataFrame


def with_flow(messages: pl.DataFrame) -> pl.DataFrame:
    """Sort by time and add ``mi`` plus the client/server view of each message's addresses."""
    qr = pl.col("qr")

    def side(query_side: str, response_side: str, name: str) -> pl.Expr:
        return pl.when(qr).then(pl.col(response_side)).otherwise(pl.col(query_side)).alias(name)

    return (
        messages.sort(ORDER)
        .with_row_index("mi")
        .with_columns(
            side("src_hi", "dst_hi", "c_hi"),
            side("src_lo", "dst_lo", "c_lo"),
            side("sport", "dport", "c_port"),
            side("dst_hi", "src_hi", "s_hi"),
            side("dst_lo", "src_lo", "s_lo"),
            side("dport", "sport", "s_port"),
            pl.col("qname").str.to_lowercase().alias("qkey"),
        )
    )


def pair(messages: pl.DataFrame, timeout_ns: int, capture_end_ns: int, *, vectorized: bool = True) -> Paired:
    """Pair ``messages`` (schema ``MESSAGES``); ``capture_end_ns`` is the last frame's time."""
    m = with_flow(messages)
    qr = pl.col("qr")
    if vectorized:
        m = m.with_columns(
            pl.len().over(KEY).alias("_n"),
            (qr & pl.col("qname").is_null()).any().over(FLOW).alias("_noq"),
            qr.first().over(KEY).alias("_qr0"),
            qr.last().over(KEY).alias("_qr1"),
            (pl.col("ts_ns").last() - pl.col("ts_ns").first()).over(KEY).alias("_dt"),
            pl.col("mi").first().over(KEY).alias("_mi0"),
            pl.col("mi").last().over(KEY).alias("_mi1"),
        )
        single = (pl.col("_n") == 1) & ~pl.col("_noq")
        duo = (
            (pl.col("_n") == 2) & ~pl.col("_noq") & ~pl.col("_qr0") & pl.col("_qr1")
            & (pl.col("_dt") <= timeout_ns)
        )
        m = m.with_columns((single | duo).alias("_simple"))
        simple = m.filter(pl.col("_simple")).with_columns(
            pl.when(~qr).then(pl.lit("query")).when(pl.col("_n") == 2).then(pl.lit("response"))
            .otherwise(pl.lit("orphan_response")).cast(ROLE).alias("role"),
            pl.when(pl.col("_n") == 2).then(pl.col("_mi0")).when(~qr).then(pl.col("mi"))
            .otherwise(None).cast(pl.UInt32).alias("txn"),
        )
        simple_links = simple.filter(~qr).select(
            pl.col("mi").alias("query_mi"),
            pl.when(pl.col("_n") == 2).then(pl.col("_mi1")).otherwise(None).cast(pl.UInt32).alias("response_mi"),
            pl.when(pl.col("_n") == 2).then(pl.lit("answered"))
            .when(pl.col("ts_ns") + timeout_ns > capture_end_ns).then(pl.lit("capture_ended"))
            .otherwise(pl.lit("unanswered")).cast(STATUS).alias("status"),
            pl.lit(0, dtype=pl.UInt32).alias("retransmissions"),
        )
        rest = m.filter(~pl.col("_simple"))
    else:
        simple = m.clear().with_columns(
            pl.lit(None, dtype=ROLE).alias("role"), pl.lit(None, dtype=pl.UInt32).alias("txn")
        )
        simple_links = pl.DataFrame(schema=LINKS)
        rest = m

    matcher = _Matcher(timeout_ns, capture_end_ns)
    for row in rest.select(["mi", "ts_ns", "qr", *KEY]).iter_rows():
        matcher.feed(row)
    roles, links = matcher.finish()
    slow = rest.join(
        pl.DataFrame(roles, schema={"mi": pl.UInt32, "role": ROLE, "txn": pl.UInt32}, orient="row"),
        on="mi",
        how="left",
    )
    drop = [c for c in ("_n", "_noq", "_qr0", "_qr1", "_dt", "_mi0", "_mi1", "_simple") if c in m.columns]
    messages_out = pl.concat([simple.drop(drop), slow.drop(drop)]).sort("mi")
    links_out = pl.concat(
        [simple_links, pl.DataFrame(links, schema=LINKS, orient="row")]
    ).sort("query_mi")
    return Paired(messages=messages_out, links=links_out)


@dataclass(slots=True)
class _Txn:
    mi: int
    question: tuple[object, ...]
    last_send: int
    retransmissions: int = 0


@dataclass(slots=True)
class _Answered:
    question: tuple[object, ...]
    ts: int
    mi: int


@dataclass
class _Matcher:
    """The explicit state machine: per (flow, ID), outstanding queries in order of arrival."""

    timeout_ns: int
    capture_end_ns: int
    outstanding: dict[tuple[object, ...], list[_Txn]] = field(default_factory=dict)
    answered: dict[tuple[object, ...], list[_Answered]] = field(default_factory=dict)
    roles: list[tuple[int, str, int | None]] = field(default_factory=list)
    links: list[tuple[int, int | None, str, int]] = field(default_factory=list)

    def feed(self, row: tuple[object, ...]) -> None:
        mi, ts, is_response = int(row[0]), int(row[1]), bool(row[2])  # type: ignore[call-overload]
        flow, question = row[3:11], row[11:14]
        pending = self.outstanding.setdefault(flow, [])
        self._expire(pending, ts)
        if not is_response:
            for txn in pending:
                if txn.question == question:
                    txn.retransmissions += 1
                    txn.last_send = ts
                    self.roles.append((mi, "retransmission", txn.mi))
                    return
            pending.append(_Txn(mi, question, ts))
            self.roles.append((mi, "query", mi))
            return
        no_question = question[0] is None
        for i, txn in enumerate(pending):
            if no_question or txn.question == question:
                del pending[i]
                self.links.append((txn.mi, mi, "answered", txn.retransmissions))
                self.answered.setdefault(flow, []).append(_Answered(question, ts, txn.mi))
                self.roles.append((mi, "response", txn.mi))
                return
        recent = self.answered.get(flow, [])
        recent[:] = [a for a in recent if ts - a.ts <= self.timeout_ns]
        for a in recent:
            if no_question or a.question == question:
                self.roles.append((mi, "duplicate_response", a.mi))
                return
        self.roles.append((mi, "orphan_response", None))

    def _expire(self, pending: list[_Txn], now: int) -> None:
        if not any(t.last_send + self.timeout_ns < now for t in pending):
            return
        for txn in pending:
            if txn.last_send + self.timeout_ns < now:
                self.links.append((txn.mi, None, "unanswered", txn.retransmissions))
        pending[:] = [t for t in pending if t.last_send + self.timeout_ns >= now]

    def finish(self) -> tuple[list[tuple[int, str, int | None]], list[tuple[int, int | None, str, int]]]:
        for pending in self.outstanding.values():
            for txn in pending:
                ended = txn.last_send + self.timeout_ns > self.capture_end_ns
                self.links.append((txn.mi, None, "capture_ended" if ended else "unanswered", txn.retransmissions))
        self.outstanding.clear()
        return self.roles, self.links
