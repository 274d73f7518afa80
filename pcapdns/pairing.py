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

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.model import CaptureInfo
from pcapdns.schema import LINKS, ROLE, ROLES, STATUS, STATUSES

_NO_QUESTION = 0xFFFFFFFF  # question id of a message without a question


@dataclass(slots=True)
class Paired:
    """Messages in time order with ``mi``, ``role`` and ``txn``; one link per transaction."""

    messages: pl.DataFrame
    links: pl.DataFrame


def _keys(m: pl.DataFrame) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """The exact pairing key of every message, packed into three 64-bit integers.

    ``flow_a`` = client id, server id; ``flow_b`` = transport, client port, server port, DNS ID;
    ``question`` = id of the lower-cased name, QTYPE, QCLASS.  The client is the query's sender.
    """
    qr = pl.col("qr")
    u64 = pl.UInt64

    def side(query_side: str, response_side: str) -> pl.Expr:
        return pl.when(qr).then(pl.col(response_side)).otherwise(pl.col(query_side)).cast(u64)

    def shifted(expr: pl.Expr, bits: int) -> pl.Expr:
        return expr * pl.lit(1 << bits, dtype=u64)

    name_id = pl.col("qname").str.to_lowercase().cast(pl.Categorical).to_physical().cast(u64)
    k = m.select(
        (shifted(side("src", "dst"), 32) | side("dst", "src")).alias("a"),
        (
            shifted(pl.col("transport").cast(u64), 48)
            | shifted(side("sport", "dport"), 32)
            | shifted(side("dport", "sport"), 16)
            | pl.col("id").cast(u64)
        ).alias("b"),
        pl.when(pl.col("qname").is_null())
        .then(pl.lit(_NO_QUESTION << 32, dtype=u64))
        .otherwise(shifted(name_id, 32) | shifted(pl.col("qtype").cast(u64), 16) | pl.col("qclass").cast(u64))
        .alias("q"),
    )
    return k.get_column("a").to_numpy(), k.get_column("b").to_numpy(), k.get_column("q").to_numpy()


def pair(messages: pl.DataFrame, timeout_ns: int, capture_end_ns: int, *, vectorized: bool = True) -> Paired:
    """Pair ``messages`` (schema ``MESSAGES``); ``capture_end_ns`` is the last frame's time.

    Returns the messages in time order with ``mi`` (row number), ``role`` and ``txn`` (the ``mi`` of
    the transaction's first query) added.
    """
    ts_col = messages.get_column("ts_ns")
    # Messages arrive in (file, frame) order; a capture is almost always in time order already.
    m = messages if ts_col.is_sorted() else messages.sort("ts_ns", maintain_order=True)
    m = m.with_row_index("mi")
    n = m.height
    ts = m.get_column("ts_ns").to_numpy()
    is_resp = m.get_column("qr").to_numpy()
    role = np.zeros(n, dtype=np.uint8)
    txn = np.full(n, -1, dtype=np.int64)
    links: list[pl.DataFrame] = []
    flow_a, flow_b, question = _keys(m) if n else (np.zeros(0, np.uint64),) * 3
    complex_rows = np.arange(n)
    if vectorized and n:
        # Sort by key, stably: each run of equal keys is one key's messages in time order.
        order = (
            pl.DataFrame({"a": flow_a, "b": flow_b, "q": question})
            .with_row_index("i")
            .sort(["a", "b", "q", "i"])  # the row index breaks ties: stable, and faster than maintain_order
            .get_column("i")
            .to_numpy()
        )
        sa, sb, sq = flow_a[order], flow_b[order], question[order]
        start = np.ones(n, dtype=bool)
        start[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1]) | (sq[1:] != sq[:-1])
        run = np.cumsum(start) - 1
        starts = np.flatnonzero(start)
        lengths = np.diff(np.append(starts, n))
        glen = lengths[run]
        # A response without a question may answer any question of its flow: its flow goes slow.
        clean = np.ones(n, dtype=bool)
        noq = np.flatnonzero(is_resp & (question == (_NO_QUESTION << 32)))
        if noq.size:
            flows = {(int(a), int(b)) for a, b in zip(flow_a[noq], flow_b[noq], strict=True)}
            maybe = np.flatnonzero(np.isin(sa, flow_a[noq]))
            hit = [i for i in maybe.tolist() if (int(sa[i]), int(sb[i])) in flows]
            clean[hit] = False
        single = (glen == 1) & clean
        pairs = starts[lengths == 2]
        first, second = order[pairs], order[pairs + 1]
        duo_ok = ~is_resp[first] & is_resp[second] & (ts[second] - ts[first] <= timeout_ns)
        duo_ok &= clean[pairs] & clean[pairs + 1]
        first, second = first[duo_ok], second[duo_ok]
        lone = order[single]
        lone_q = lone[~is_resp[lone]]
        lone_r = lone[is_resp[lone]]
        role[first] = _ROLE_CODE["query"]
        txn[first] = first
        role[second] = _ROLE_CODE["response"]
        txn[second] = first
        role[lone_q] = _ROLE_CODE["query"]
        txn[lone_q] = lone_q
        role[lone_r] = _ROLE_CODE["orphan_response"]
        ended = ts[lone_q] + timeout_ns > capture_end_ns
        links.append(_links(first, second, np.full(len(first), _STATUS_CODE["answered"])))
        links.append(
            _links(lone_q, None, np.where(ended, _STATUS_CODE["capture_ended"], _STATUS_CODE["unanswered"]))
        )
        decided = np.zeros(n, dtype=bool)
        decided[first] = decided[second] = decided[lone] = True
        complex_rows = np.flatnonzero(~decided)

    if len(complex_rows):
        matcher = _Matcher(timeout_ns, capture_end_ns)
        rows = zip(
            complex_rows.tolist(),
            ts[complex_rows].tolist(),
            is_resp[complex_rows].tolist(),
            flow_a[complex_rows].tolist(),
            flow_b[complex_rows].tolist(),
            question[complex_rows].tolist(),
            strict=True,
        )
        for mi, t, r, a, b, q in rows:
            matcher.feed(mi, t, r, (a, b), q)
        roles, slow_links = matcher.finish()
        for mi, name, t in roles:
            role[mi] = _ROLE_CODE[name]
            txn[mi] = -1 if t is None else t
        links.append(pl.DataFrame(slow_links, schema=LINKS, orient="row"))
    out = m.with_columns(
        pl.Series("role", role).replace_strict(dict(enumerate(ROLES)), return_dtype=ROLE),
        pl.Series("txn", txn).replace(-1, None).cast(pl.UInt32),
    )
    all_links = pl.concat([pl.DataFrame(schema=LINKS), *links])
    return Paired(messages=out, links=all_links)


_ROLE_CODE = {name: i for i, name in enumerate(ROLES)}
_STATUS_CODE = {name: i for i, name in enumerate(STATUSES)}


def _links(
    query: npt.NDArray[np.int64], response: npt.NDArray[np.int64] | None, status: npt.NDArray[np.int64]
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query_mi": pl.Series(query, dtype=pl.UInt32),
            "response_mi": pl.Series(response, dtype=pl.UInt32)
            if response is not None
            else pl.repeat(None, len(query), dtype=pl.UInt32, eager=True),
            "status": pl.Series(status).replace_strict(dict(enumerate(STATUSES)), return_dtype=STATUS),
            "retransmissions": pl.repeat(0, len(query), dtype=pl.UInt32, eager=True),
        }
    )


@dataclass(slots=True)
class _Txn:
    mi: int
    question: int
    last_send: int
    retransmissions: int = 0


@dataclass(slots=True)
class _Answered:
    question: int
    ts: int
    mi: int


@dataclass
class _Matcher:
    """The explicit state machine: per (flow, ID), outstanding queries in order of arrival."""

    timeout_ns: int
    capture_end_ns: int
    outstanding: dict[tuple[int, int], list[_Txn]] = field(default_factory=dict)
    answered: dict[tuple[int, int], list[_Answered]] = field(default_factory=dict)
    roles: list[tuple[int, str, int | None]] = field(default_factory=list)
    links: list[tuple[int, int | None, str, int]] = field(default_factory=list)

    def feed(self, mi: int, ts: int, is_response: bool, flow: tuple[int, int], question: int) -> None:
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
        no_question = question == _NO_QUESTION << 32
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
                self.links.append(
                    (txn.mi, None, "capture_ended" if ended else "unanswered", txn.retransmissions)
                )
        self.outstanding.clear()
        return self.roles, self.links


def pair_hosts(
    messages: pl.DataFrame, timeout_ns: int, captures: Sequence[CaptureInfo], hosts: Sequence[str]
) -> Paired:
    """Pair each host's messages on their own, as if its files were one capture; one result.

    ``hosts[file_id]`` names the host each file was captured on.  A host's capture ends with its
    own last frame.  The result is :func:`pair`'s for all messages when there is a single host;
    otherwise ``mi`` still numbers all messages in time order, and links come host by host.
    """
    names = sorted(set(hosts))
    group = np.array([names.index(h) for h in hosts], dtype=np.int64)
    ends = [0] * len(names)
    for c, g in zip(captures, group.tolist(), strict=True):
        if c.last_ts_ns is not None:
            ends[g] = max(ends[g], c.last_ts_ns)
    if len(names) <= 1:
        return pair(messages, timeout_ns, ends[0] if ends else 0)
    ts_col = messages.get_column("ts_ns")
    m = messages if ts_col.is_sorted() else messages.sort("ts_ns", maintain_order=True)
    of_message = group[m.get_column("file_id").to_numpy()]
    out: list[pl.DataFrame] = []
    links: list[pl.DataFrame] = []
    for g, end in enumerate(ends):
        rows = np.flatnonzero(of_message == g)
        p = pair(m[rows], timeout_ns, end)
        to_all = pl.Series(rows.astype(np.uint32))
        msgs = p.messages
        out.append(msgs.with_columns(to_all.gather(msgs.get_column(c)).alias(c) for c in ("mi", "txn")))
        lk = p.links
        links.append(
            lk.with_columns(to_all.gather(lk.get_column(c)).alias(c) for c in ("query_mi", "response_mi"))
        )
    return Paired(messages=pl.concat(out).sort("mi"), links=pl.concat(links))
