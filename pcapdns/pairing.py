"""Pair every query with its response.

The rules (RFC 1035 gives the ID; the rest is what resolvers and Zeek do):

* A response matches an outstanding query with the same transport, client address and port, server
  address and port, DNS ID and question (name compared case-insensitively, type, class).  A
  response with no question (QDCOUNT=0: FORMERR answers often have none) matches the oldest
  outstanding query with the same flow and ID (one whose question could not be parsed included).
  A response whose question section is there but cannot be parsed matches nothing (it is a
  duplicate or orphan response), and a query with no question (QDCOUNT=0) is never answered:
  there is nothing to match it on.
* A query repeated (same flow, ID and question) while the earlier one is outstanding is a
  ``retransmission`` of it.  A query stays outstanding until answered or ``timeout`` after its last
  transmission; then it is ``unanswered``, or ``capture_ended`` if that deadline lies after the
  capture's last frame.
* A response arriving when nothing is outstanding is a ``duplicate_response`` if its transaction was
  answered within ``timeout`` before, else an ``orphan_response`` (late answers included).
* Latency is measured from the transaction's first query to its response.

The rules are written twice: :class:`_Matcher` is the plain Python state machine (per flow and ID,
outstanding queries in order of arrival) that defines them, and :func:`_match` is the same machine
compiled (numba) over integer keys, which the pipeline runs: one pass over the messages in time
order, no sort, no per-message Python.  The tests feed both the same messages, hand-built and
generated, and require the same roles and links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns import keytable
from pcapdns.jit import interpreted, jit, writable
from pcapdns.memory import release_memory
from pcapdns.schema import LINKS, ROLE, ROLES, STATUS, STATUSES

_NO_QUESTION = 0xFFFFFFFF  # question id of a message without a question
# The question keys of messages without a parsed question: QDCOUNT=0 (_NO_Q: a query never
# answered, a response answering any other query of its flow and ID), and a question section
# that could not be parsed (_UNPARSED_Q for a query, _BAD_Q for a response: it matches nothing).

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
Mask = npt.NDArray[np.bool_]
Int = int | np.int64  # scalars inside compiled code


@dataclass(slots=True)
class Paired:
    """Messages in time order with ``mi``, ``role`` and ``txn``; one link per transaction."""

    messages: pl.DataFrame
    links: pl.DataFrame


def _column(m: pl.DataFrame, name: str) -> npt.NDArray[Any]:
    """Column ``name`` of ``m`` as a writable numpy array, nulls as 0 (False)."""
    column = m.get_column(name)
    if column.null_count():
        column = column.fill_null(False if column.dtype == pl.Boolean else 0)
    return writable(column.to_numpy())


def flow_keys(m: pl.DataFrame, *, compiled: bool = True) -> tuple[U64, U64]:
    """The flow of every message, packed into two 64-bit integers: ``flow_a`` = client id, server
    id; ``flow_b`` = transport, client port, server port, DNS ID.  The client is the query's sender."""
    pack = _pack_flows if compiled else interpreted(_pack_flows)  # a few messages: not worth loading numba
    qr, src, dst, transport, sport, dport, ident = (
        _column(m, c) for c in ("qr", "src", "dst", "transport", "sport", "dport", "id")
    )
    return pack(qr, src, dst, transport, sport, dport, ident)


def _questions(m: pl.DataFrame, *, compiled: bool = True) -> U64:
    """The question of every message packed into a 64-bit integer: id of the lower-cased name,
    QTYPE, QCLASS.  The ids are the ``qname_key`` column where the messages have one (numbered as
    they were read: :class:`pcapdns.dns.columnar.NameKeys`).  Otherwise names are numbered through
    a categorical: only the distinct names are lower-cased, and only those that lower-casing
    changes are looked up again (a name already in lower case is its own id: the categories are
    global)."""
    pack = _pack_questions if compiled else interpreted(_pack_questions)
    if "qname_key" in m.columns:
        keys = _column(m, "qname_key")
        return pack(
            _column(m, "qr"),
            np.arange(int(keys.max()) + 1, dtype=np.uint64),  # each key stands for itself
            keys,
            writable(m.get_column("qname_key").is_null().to_numpy()),
            _column(m, "qtype"),
            _column(m, "qclass"),
            _column(m, "qdcount"),
        )
    names = m.get_column("qname").cast(pl.Categorical)
    distinct = names.unique().drop_nulls()
    codes = distinct.to_physical().to_numpy()
    lut = np.zeros(int(codes.max()) + 1 if len(codes) else 1, dtype=np.uint64)
    lut[codes] = codes
    text = distinct.cast(pl.String)
    lower = text.str.to_lowercase()
    changed = lower != text
    if changed.any():
        lut[codes[changed.to_numpy()]] = lower.filter(changed).cast(pl.Categorical).to_physical().to_numpy()
    physical = names.to_physical()
    return pack(
        _column(m, "qr"),
        lut,
        writable(physical.fill_null(0).to_numpy()),
        writable(physical.is_null().to_numpy()),
        _column(m, "qtype"),
        _column(m, "qclass"),
        _column(m, "qdcount"),
    )


@jit("UniTuple(u8[::1], 2)(b1[::1], u4[::1], u4[::1], u1[::1], u2[::1], u2[::1], u2[::1])")
def _pack_flows(
    qr: Mask,
    src: npt.NDArray[np.uint32],
    dst: npt.NDArray[np.uint32],
    transport: npt.NDArray[np.uint8],
    sport: npt.NDArray[np.uint16],
    dport: npt.NDArray[np.uint16],
    ident: npt.NDArray[np.uint16],
) -> tuple[U64, U64]:
    """:func:`flow_keys`' packing, one pass: (flow_a, flow_b) per message."""
    n = len(qr)
    flow_a = np.empty(n, dtype=np.uint64)
    flow_b = np.empty(n, dtype=np.uint64)
    for i in range(n):
        if qr[i]:  # a response: the client is its destination
            client, server = np.uint64(dst[i]), np.uint64(src[i])
            cport, sport_ = np.uint64(dport[i]), np.uint64(sport[i])
        else:
            client, server = np.uint64(src[i]), np.uint64(dst[i])
            cport, sport_ = np.uint64(sport[i]), np.uint64(dport[i])
        flow_a[i] = (client << np.uint64(32)) | server
        flow_b[i] = (
            (np.uint64(transport[i]) << np.uint64(48))
            | (cport << np.uint64(32))
            | (sport_ << np.uint64(16))
            | np.uint64(ident[i])
        )
    return flow_a, flow_b


@jit("u8[::1](b1[::1], u8[::1], u4[::1], b1[::1], u2[::1], u2[::1], u2[::1])")
def _pack_questions(
    qr: Mask,
    lut: U64,
    name: npt.NDArray[np.uint32],
    no_name: Mask,
    qtype: npt.NDArray[np.uint16],
    qclass: npt.NDArray[np.uint16],
    qdcount: npt.NDArray[np.uint16],
) -> U64:
    """:func:`_questions`' packing, one pass."""
    n = len(qr)
    question = np.empty(n, dtype=np.uint64)
    for i in range(n):
        if no_name[i]:
            question[i] = _NO_Q if qdcount[i] == 0 else (_BAD_Q if qr[i] else _UNPARSED_Q)
        else:
            question[i] = (
                (lut[name[i]] << np.uint64(32))
                | (np.uint64(qtype[i]) << np.uint64(16))
                | np.uint64(qclass[i])
            )
    return question


class Matched(NamedTuple):
    """What :func:`_match` finds: per message its role and transaction, per transaction its link
    (in the order transactions close)."""

    role: npt.NDArray[np.uint8]  # per message: its code in ROLES
    txn: I32  # per message: the row of its transaction's first query, -1 for none
    query: I32  # per transaction: the row of its first query
    response: I32  # per transaction: the row of its response, -1 for none
    status: npt.NDArray[np.uint8]  # per transaction: its code in STATUSES
    retransmissions: I32  # per transaction: how many times its query was sent again


def pair(messages: pl.DataFrame, timeout_ns: int, capture_end_ns: int, *, vectorized: bool = True) -> Paired:
    """Pair ``messages`` (schema ``MESSAGES``); ``capture_end_ns`` is the last frame's time.

    Returns the messages in time order with ``mi`` (row number), ``role`` and ``txn`` (the ``mi`` of
    the transaction's first query) added.  ``vectorized=False`` runs the Python reference machine
    instead of the compiled one (the tests compare the two).
    """
    ts_col = messages.get_column("ts_ns")
    # Messages arrive in (file, frame) order; a capture is almost always in time order already.
    m = messages if ts_col.is_sorted() else messages.sort("ts_ns", maintain_order=True)
    m = m.with_row_index("mi")
    n = m.height
    ts = writable(m.get_column("ts_ns").to_numpy())
    is_resp = writable(m.get_column("qr").to_numpy())
    empty = np.zeros(0, np.uint64)
    flow_a, flow_b = flow_keys(m, compiled=vectorized) if n else (empty, empty)
    question = _questions(m, compiled=vectorized) if n else empty
    if "qname_key" in m.columns:  # pairing's own: the tables read the names' text
        m = m.drop("qname_key")
    if vectorized:
        flow, flows = keytable.numbered(flow_a, flow_b)
        del flow_a, flow_b  # 16 bytes a message: the flows' numbers stand for them
        matched = Matched._make(_match(ts, is_resp, flow, flows, question, timeout_ns, capture_end_ns))
        del flow, question
        # The flows', the questions' and the state machine's arrays are the C heap's: freed, they
        # stay resident until handed back, under what polars allocates next (release_memory).
        # Once: each earlier step's freed arrays are reused by the next step's, not re-faulted.
        release_memory()
        role, txn = matched.role, matched.txn
        # Links in query order (the transactions table's order): query ids are distinct row
        # numbers, so a scatter sorts them, no comparison sort needed.
        at = np.full(n, -1, dtype=np.int64)
        at[matched.query] = np.arange(len(matched.query))
        by_query = at[at >= 0]
        del at
        matched = matched._replace(
            query=matched.query[by_query],
            response=matched.response[by_query],
            status=matched.status[by_query],
            retransmissions=matched.retransmissions[by_query],
        )
        links = pl.DataFrame(
            {
                "query_mi": pl.Series(matched.query, dtype=pl.UInt32).set_sorted(),
                "response_mi": pl.Series(matched.response).cast(pl.UInt32, strict=False),  # -1: none
                "status": pl.Series(list(STATUSES), dtype=STATUS).gather(matched.status.astype(np.uint32)),
                "retransmissions": pl.Series(matched.retransmissions, dtype=pl.UInt32),
            }
        )
        del matched
    else:
        role = np.zeros(n, dtype=np.uint8)
        txn = np.full(n, -1, dtype=np.int64)
        matcher = _Matcher(timeout_ns, capture_end_ns)
        columns = (ts, is_resp, flow_a, flow_b, question)
        for mi, (t, r, a, b, q) in enumerate(zip(*(c.tolist() for c in columns), strict=True)):
            matcher.feed(mi, t, r, (a, b), q)
        roles, slow_links = matcher.finish()
        for mi, name, t in roles:
            role[mi] = _ROLE_CODE[name]
            txn[mi] = -1 if t is None else t
        links = pl.DataFrame(slow_links, schema=LINKS, orient="row")
    out = m.with_columns(
        pl.Series("role", list(ROLES), dtype=ROLE).gather(role.astype(np.uint32)),  # codes -> Enum
        pl.Series("txn", txn).cast(pl.UInt32, strict=False),  # -1 (no transaction) becomes null
    )
    return Paired(messages=out, links=links.select(pl.col(c).cast(t) for c, t in LINKS.items()))


@jit(
    "Tuple((u1[::1], i4[::1], i4[::1], i4[::1], u1[::1], i4[::1]))"
    "(i8[::1], b1[::1], u4[::1], i8, u8[::1], i8, i8)"
)
def _match(
    ts: I64, is_resp: Mask, flow: npt.NDArray[np.uint32], flows: Int, q: U64, timeout: Int, end: Int
) -> tuple[npt.NDArray[np.uint8], I32, I32, I32, npt.NDArray[np.uint8], I32]:
    """:class:`_Matcher`, compiled: the same rules, over every message in time order; returns
    :class:`Matched`'s fields, in order (compiled code returns a plain tuple).

    ``flow`` numbers each message's flow (client, server, ports, transport, ID), ``0 .. flows-1``
    (:func:`pcapdns.keytable.numbered`).  Per flow, the
    outstanding queries and the recently answered responses are singly linked lists in order of
    arrival, threaded through ``nxt`` by message index (a message is on at most one list).
    """
    n = len(ts)
    pend = np.full(flows, -1, dtype=np.int32)  # per flow: first outstanding query
    done = np.full(flows, -1, dtype=np.int32)  # per flow: first recently answered response
    nxt = np.full(n, -1, dtype=np.int32)
    last_send = np.empty(n, dtype=np.int64)  # per outstanding query
    retx = np.zeros(n, dtype=np.int32)
    role = np.zeros(n, dtype=np.uint8)
    txn = np.full(n, -1, dtype=np.int32)
    lq = np.empty(n, dtype=np.int32)
    lr = np.full(n, -1, dtype=np.int32)
    ls = np.zeros(n, dtype=np.uint8)
    lx = np.zeros(n, dtype=np.int32)
    links = 0
    for mi in range(n):
        t = ts[mi]
        f = flow[mi]
        # expire: outstanding queries past their deadline become unanswered
        prev = -1
        node = pend[f]
        while node >= 0:
            after = nxt[node]
            if last_send[node] + timeout < t:
                lq[links] = node
                ls[links] = _UNANSWERED
                lx[links] = retx[node]
                links += 1
                if prev < 0:
                    pend[f] = after
                else:
                    nxt[prev] = after
            else:
                prev = node
            node = after
        qq = q[mi]
        if not is_resp[mi]:
            tail = -1
            node = pend[f]
            while node >= 0 and q[node] != qq:
                tail = node
                node = nxt[node]
            if node >= 0:
                retx[node] += 1
                last_send[node] = t
                role[mi] = _RETRANSMISSION
                txn[mi] = node
                continue
            last_send[mi] = t
            if tail < 0:
                pend[f] = mi
            else:
                nxt[tail] = mi
            role[mi] = _QUERY
            txn[mi] = mi
            continue
        no_question = qq == _NO_Q
        prev = -1
        node = pend[f]
        while node >= 0 and not (q[node] != _NO_Q and (no_question or q[node] == qq)):
            prev = node
            node = nxt[node]
        if node >= 0:
            if prev < 0:
                pend[f] = nxt[node]
            else:
                nxt[prev] = nxt[node]
            lq[links] = node
            lr[links] = mi
            ls[links] = _ANSWERED
            lx[links] = retx[node]
            links += 1
            role[mi] = _RESPONSE
            txn[mi] = node
            if done[f] < 0:  # remember the answer (at the end of the flow's answered list)
                done[f] = mi
            else:
                tail = done[f]
                while nxt[tail] >= 0:
                    tail = nxt[tail]
                nxt[tail] = mi
            continue
        # forget answers older than the timeout, then look for the transaction this one repeats
        prev = -1
        node = done[f]
        while node >= 0:
            after = nxt[node]
            if t - ts[node] > timeout:
                if prev < 0:
                    done[f] = after
                else:
                    nxt[prev] = after
            else:
                prev = node
            node = after
        node = done[f]
        while node >= 0 and not (no_question or q[node] == qq):
            node = nxt[node]
        if node >= 0:
            role[mi] = _DUPLICATE
            txn[mi] = txn[node]
        else:
            role[mi] = _ORPHAN
    for f in range(flows):
        node = pend[f]
        while node >= 0:
            lq[links] = node
            ls[links] = _ENDED if last_send[node] + timeout > end else _UNANSWERED
            lx[links] = retx[node]
            links += 1
            node = nxt[node]
    return role, txn, lq[:links], lr[:links], ls[:links], lx[:links]


_ROLE_CODE = {name: i for i, name in enumerate(ROLES)}
_STATUS_CODE = {name: i for i, name in enumerate(STATUSES)}
_QUERY, _RETRANSMISSION, _RESPONSE = _ROLE_CODE["query"], _ROLE_CODE["retransmission"], _ROLE_CODE["response"]
_DUPLICATE, _ORPHAN = _ROLE_CODE["duplicate_response"], _ROLE_CODE["orphan_response"]
_ANSWERED, _UNANSWERED = _STATUS_CODE["answered"], _STATUS_CODE["unanswered"]
_ENDED = _STATUS_CODE["capture_ended"]
_NO_Q = np.uint64(_NO_QUESTION << 32)
_BAD_Q = np.uint64((_NO_QUESTION << 32) | 1)
_UNPARSED_Q = np.uint64((_NO_QUESTION << 32) | 2)


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
            if txn.question != _NO_QUESTION << 32 and (no_question or txn.question == question):
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
