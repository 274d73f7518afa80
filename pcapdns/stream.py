"""Streaming analysis: the file pipeline's stages, fed batch by batch, with bounded state.

:class:`Stream` takes :class:`~pcapdns.model.FrameBatch` es (from a live capture, or from a file in
small batches), decodes them with the same :class:`~pcapdns.dissect.Dissector`, and pairs with the
same :func:`~pcapdns.pairing.pair`.  Messages whose transaction may still change stay *pending*
and are paired again with every new step; a transaction *settles* once nothing later can touch it:

* answered, and ``timeout`` has passed since its response (no duplicate can follow);
* unanswered, and ``timeout`` has passed since its last transmission: it is reported then;
* an orphan response, as soon as it is in the past.

Settled transactions are counted into :class:`~pcapdns.tables.totals.Totals` (the ``analyze
--json`` keys) and kept for a while in a rolling :class:`Window` that the anomaly engine runs
over; new findings are reported once, with their onset.  Because dropping a settled transaction
cannot change how any later message pairs, the totals after :meth:`Stream.finish` equal the file
analysis of the same frames.  Memory is bounded by the traffic of one ``timeout`` (pending), the
window's size cap, and the address table's cap -- never by how long the stream runs.

:class:`Runner` is the live loop around a capture: a capture thread reads batches into a bounded
queue (a full queue drops the batch and counts it), the calling thread analyses, settles every
``interval`` and calls back with a :class:`Tick`.
"""

from __future__ import annotations

import queue
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns import keytable
from pcapdns.anomalies import Inputs, Thresholds
from pcapdns.anomalies.rules import detect
from pcapdns.dissect import AddressTable, Dissector
from pcapdns.model import (
    DEFAULT_PORTS,
    GENEVE_PORTS,
    VXLAN_PORTS,
    CaptureInfo,
    DecodeIssue,
    FrameBatch,
    IssueLog,
)
from pcapdns.pairing import Paired, flow_keys, pair
from pcapdns.schema import ANOMALIES, DECODE_ISSUES, ISSUE_COUNTS, LINKS, MALFORMED, MESSAGES, ROLE, ROLES
from pcapdns.tables.engine import engine_inputs, issue_counts_frame, issues_frame, query_facts, unpaired
from pcapdns.tables.names import address_text
from pcapdns.tables.totals import PairCounts, Totals
from pcapdns.tables.transactions import build_transactions

_EMPTY = Paired(
    messages=pl.DataFrame(schema={"mi": pl.UInt32(), **MESSAGES, "role": ROLE, "txn": pl.UInt32()}),
    links=pl.DataFrame(schema=LINKS),
)
_SENDS = np.array([ROLES.index("query"), ROLES.index("retransmission")], dtype=np.uint32)


@dataclass(slots=True)
class StreamOptions:
    ports: frozenset[int] = DEFAULT_PORTS
    vxlan_ports: frozenset[int] = VXLAN_PORTS
    geneve_ports: frozenset[int] = GENEVE_PORTS
    timeout_s: float = 5.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    window_s: float = 600.0  # settled transactions kept for the anomaly engine ...
    window_rows: int = 200_000  # ... at most this many
    reorder_s: float = 0.2  # frames may arrive this much out of time order
    max_addresses: int = 200_000  # the address table is compacted beyond this
    ring_bytes: int = 64 << 20  # recent raw frames kept for evidence


@dataclass(slots=True)
class Step:
    """What one settling step decided."""

    transactions: pl.DataFrame  # the transactions settled now (TRANSACTIONS + query facts)
    unanswered: int  # of which unanswered (timed out)


class _Chunks:
    """Frames of one table in time order, trimmed by age and row count."""

    def __init__(self, schema: dict[str, pl.DataType] | None = None) -> None:
        self.empty = pl.DataFrame(schema=schema) if schema else None
        self.parts: deque[tuple[int, pl.DataFrame]] = deque()  # (newest ts_ns, rows)
        self.rows = 0

    def add(self, df: pl.DataFrame, newest: int) -> None:
        if self.empty is None:
            self.empty = df.clear()
        if df.height:
            self.parts.append((newest, df))
            self.rows += df.height

    def trim(self, oldest: int, max_rows: int) -> None:
        parts = self.parts
        while parts and (parts[0][0] < oldest or self.rows - parts[0][1].height >= max_rows):
            self.rows -= parts.popleft()[1].height

    def frame(self) -> pl.DataFrame | None:
        if not self.parts:
            return self.empty
        return pl.concat([df for _, df in self.parts], how="vertical_relaxed")


class Window:
    """The recent settled transactions, unpaired responses, malformations and decode issues."""

    def __init__(self, seconds: float, rows: int) -> None:
        self.span_ns = int(seconds * 1e9)
        self.max_rows = rows
        self.transactions = _Chunks()
        self.unpaired = _Chunks()
        self.malformed = _Chunks(MALFORMED)
        self.issues = _Chunks(DECODE_ISSUES)  # the first examples of each reason, per step
        self.issue_counts = _Chunks(ISSUE_COUNTS)  # all of them, counted per step

    def trim(self, now_ns: int) -> None:
        for chunks in (self.transactions, self.unpaired, self.malformed, self.issues, self.issue_counts):
            chunks.trim(now_ns - self.span_ns, self.max_rows)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in (self.transactions, self.unpaired, self.malformed, self.issues))


class FrameRing:
    """Recent raw batches, bounded in bytes, to fetch a frame back by number (for evidence)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.batches: deque[FrameBatch] = deque()
        self.bytes = 0

    def add(self, batch: FrameBatch) -> None:
        if not len(batch):
            return
        self.batches.append(batch)
        self.bytes += len(batch.buf)
        while self.bytes > self.max_bytes and len(self.batches) > 1:
            self.bytes -= len(self.batches.popleft().buf)

    def get(self, frame: int) -> tuple[int, int, bytes] | None:
        """``(ts_ns, wirelen, bytes)`` of ``frame``, or ``None`` when it is no longer kept."""
        firsts = [int(b.frame[0]) for b in self.batches]
        i = bisect_right(firsts, frame) - 1
        if i < 0:
            return None
        b = self.batches[i]
        j = int(np.searchsorted(b.frame, frame))
        if j >= len(b) or int(b.frame[j]) != frame:
            return None
        return int(b.ts_ns[j]), int(b.wirelen[j]), b.frame_bytes(j)


def _counts(messages: pl.DataFrame, links: pl.DataFrame, rtt: npt.NDArray[np.int64]) -> PairCounts:
    roles = messages.get_column("role").value_counts() if messages.height else None
    status = links.get_column("status").value_counts() if links.height else None
    return PairCounts(
        roles=_counter(roles),
        statuses=_counter(status),
        rtt_ns=rtt,
    )


def _rtt(messages: pl.DataFrame, answered: pl.DataFrame) -> npt.NDArray[np.int64]:
    """Each answered link's latency: from its query (or the query time its dnstap response
    carries) to its response."""
    ts = messages.get_column("ts_ns").to_numpy()
    sent = messages.get_column("query_ts_ns").fill_null(-1).to_numpy()
    r = answered.get_column("response_mi").cast(pl.Int64).to_numpy()
    q = answered.get_column("query_mi").cast(pl.Int64).to_numpy()
    return np.asarray(ts[r] - np.where(sent[r] >= 0, sent[r], ts[q]), dtype=np.int64)


def _flow_hash(m: pl.DataFrame) -> npt.NDArray[np.uint64]:
    """One 64-bit number per message for its flow (pairing's flow key, hashed by the key table).

    Equal flows hash equal; a collision only makes a transaction be paired again needlessly.
    """
    return keytable.hashes(*flow_keys(m))


def _isin(values: npt.NDArray[np.uint64], among: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """``np.isin`` by hashing: the wait set's flows (about a timeout's worth of traffic) against a
    step's, several times faster than numpy's sort-based test at live rates."""
    out: npt.NDArray[np.bool_] = pl.Series(values).is_in(pl.Series(among).implode()).to_numpy()
    return out


def _subset(p: Paired, msg_mask: npt.NDArray[np.bool_], link_mask: npt.NDArray[np.bool_]) -> Paired:
    """Whole transactions out of a pairing result, renumbered from 0 (``mi``, ``txn`` and links)."""
    sel = np.flatnonzero(msg_mask)
    n = p.messages.height
    remap = np.full(n, -1, dtype=np.int64)
    remap[sel] = np.arange(sel.size)
    txn = p.messages.get_column("txn").fill_null(-1).cast(pl.Int64).to_numpy()[sel]
    links = p.links.filter(pl.Series(link_mask))
    q = links.get_column("query_mi").cast(pl.Int64).to_numpy()
    r = links.get_column("response_mi").fill_null(-1).cast(pl.Int64).to_numpy()
    # A boolean filter copies runs of rows; a gather by index (``messages[sel]``) copies row by
    # row, and costs several times more on the large, mostly kept wait set.
    if sel.size == n:
        kept = p.messages
    elif sel.size == 0:
        kept = p.messages.clear()
    else:
        kept = p.messages.filter(pl.Series(msg_mask))
    return Paired(
        messages=kept.with_columns(
            pl.Series("mi", np.arange(sel.size), dtype=pl.UInt32),
            _ids("txn", np.where(txn >= 0, remap[np.maximum(txn, 0)], -1)),
        ),
        links=links.with_columns(
            pl.Series("query_mi", remap[q], dtype=pl.UInt32),
            _ids("response_mi", np.where(r >= 0, remap[np.maximum(r, 0)], -1)),
        ),
    )


def _ids(name: str, values: npt.NDArray[np.int64]) -> pl.Series:
    """Row numbers as ``UInt32``, -1 as null (a cast that turns what does not fit into nulls: several
    times cheaper than replacing -1 first)."""
    return pl.Series(name, values).cast(pl.UInt32, strict=False)


def _concat(parts: list[Paired]) -> Paired:
    """Pairing results side by side, renumbered so that row i of the messages has ``mi`` i."""
    parts = [p for p in parts if p.messages.height]
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return parts[0]
    messages, links, base = [], [], 0
    for p in parts:
        shift = pl.lit(base, dtype=pl.UInt32)
        messages.append(p.messages.with_columns(pl.col("mi") + shift, pl.col("txn") + shift))
        links.append(p.links.with_columns(pl.col("query_mi") + shift, pl.col("response_mi") + shift))
        base += p.messages.height
    return Paired(messages=pl.concat(messages), links=pl.concat(links))


def _merge_counts(a: PairCounts, b: PairCounts) -> PairCounts:
    return PairCounts(
        roles=a.roles + b.roles, statuses=a.statuses + b.statuses, rtt_ns=np.concatenate([a.rtt_ns, b.rtt_ns])
    )


def _counter(df: pl.DataFrame | None) -> Any:
    from collections import Counter

    return Counter({str(k): int(n) for k, n in df.iter_rows()}) if df is not None else Counter()


class Stream:
    """Streaming analysis of one capture (``name`` is what tables call the file)."""

    def __init__(self, options: StreamOptions | None = None, name: str = "live") -> None:
        self.options = opts = options or StreamOptions()
        self.name = name
        self.timeout_ns = int(opts.timeout_s * 1e9)
        self.reorder_ns = int(opts.reorder_s * 1e9)
        self.dissector = Dissector(opts.ports, vxlan_ports=opts.vxlan_ports, geneve_ports=opts.geneve_ports)
        self.info = CaptureInfo(file_id=0, path=name, format="live")
        self.totals = Totals()
        self.window = Window(opts.window_s, opts.window_rows)
        self.ring = FrameRing(opts.ring_bytes)
        self._pending = pl.DataFrame(schema=MESSAGES)  # outstanding queries, recent orphans
        self._pending_step = PairCounts()
        self._wait = _EMPTY  # answered transactions inside their duplicate window
        self._wait_deadline = np.zeros(0, dtype=np.int64)
        self._wait_flow = np.zeros(0, dtype=np.uint64)
        self._new: list[pl.DataFrame] = []
        self._pending_counts = PairCounts()
        self._text: dict[int, str] = {}
        self._findings: dict[tuple[object, ...], int] = {}  # finding key -> last time seen (ns)
        self.interval_queries = 0
        self.interval_responses = 0

    # -- input -------------------------------------------------------------------------------
    def feed(self, batch: FrameBatch) -> None:
        """Decode one batch; pairing waits for the next :meth:`settle`."""
        n = len(batch)
        if n == 0:
            return
        self.ring.add(batch)
        self.totals.add_frames(n, int(batch.ts_ns.min()), int(batch.ts_ns.max()))
        self._absorb(self.dissector.dissect(batch))

    def add_issues(self, issues: Iterable[DecodeIssue]) -> None:
        """Problems the source found itself (not in a batch), counted and kept like the others."""
        log = IssueLog(issues)
        if not log:
            return
        self.totals.add_issues(log.counts())
        last = self.totals.last_ts or 0
        self.window.issues.add(issues_frame(log), last)
        self.window.issue_counts.add(issue_counts_frame(log), last)

    def _absorb(self, messages: pl.DataFrame) -> None:
        q, r = self.totals.add_messages(messages)
        self.interval_queries += q
        self.interval_responses += r
        if messages.height:
            self._new.append(messages)
        malformed = self.dissector.take_malformed()
        self.totals.add_malformed(malformed)
        issues = self.dissector.take_issues()
        self.totals.add_issues(issues.counts())
        last = self.totals.last_ts or 0
        self.window.malformed.add(malformed, last)
        if issues:
            self.window.issues.add(issues_frame(issues), last)
            self.window.issue_counts.add(issue_counts_frame(issues), last)

    # -- settling ----------------------------------------------------------------------------
    def settle(self, now_ns: int | None = None) -> Step:
        """Pair what is pending; move every transaction nothing can change any more out of it.

        ``now_ns`` is the time up to which all frames are known to have been fed (by default the
        newest frame's time); frames may still arrive ``reorder_s`` out of order.
        """
        now = max(now_ns or 0, self.totals.last_ts or 0)
        return self._settle(now - self.reorder_ns, now, final=False)

    def finish(self, end_ns: int | None = None) -> Step:
        """The end of input: flush reassembly, settle everything (as a file's end does).

        ``end_ns`` is when the capture ended, if later than its last frame (a live capture's clock).
        """
        self._absorb(self.dissector.finish())
        return self._settle(0, max(end_ns or 0, self.totals.last_ts or 0), final=True)

    def _settle(self, horizon: int, end: int, *, final: bool) -> Step:
        new = pl.concat(self._new) if self._new else pl.DataFrame(schema=MESSAGES)
        self._new = []
        # Answered transactions waiting out their duplicate window are paired again only when a
        # new message shares their flow (client, server, ports, transport, ID): pairing is per
        # flow, so the others cannot change; they settle when their deadline passes.
        w = self._wait
        w_txn = w.messages.get_column("txn").cast(pl.Int64).to_numpy()
        w_q = w.links.get_column("query_mi").cast(pl.Int64).to_numpy()
        if final:
            touched = np.ones(len(w_q), dtype=bool)
        else:
            hit = _isin(self._wait_flow, _flow_hash(new)) if new.height else np.zeros(len(w_txn), bool)
            touched = np.isin(w_q, w_txn[hit])
        expired = ~touched & (self._wait_deadline < horizon)
        group_of = np.zeros(w.messages.height, dtype=np.int64)
        group_of[w_q] = np.arange(len(w_q))
        msg_group = group_of[w_txn] if len(w_txn) else w_txn
        m = pl.concat(
            [self._pending, w.messages.filter(pl.Series(touched[msg_group])).select(list(MESSAGES)), new]
        )
        parts_done: list[Paired] = [_subset(w, expired[msg_group], expired)]
        stay = ~touched & ~expired
        wait_parts: list[tuple[Paired, npt.NDArray[np.int64], npt.NDArray[np.uint64]]] = [
            (_subset(w, stay[msg_group], stay), self._wait_deadline[stay], self._wait_flow[stay[msg_group]])
        ]
        if m.height:
            self._pair_step(m, horizon, end, final, parts_done, wait_parts)
        else:
            self._pending = m
        self._wait = _concat([p for p, _, _ in wait_parts])
        self._wait_deadline = np.concatenate([d for _, d, _ in wait_parts])
        self._wait_flow = np.concatenate([f for _, _, f in wait_parts])
        wm, wl = self._wait.messages, self._wait.links
        w_rtt = _rtt(wm, wl)
        self._pending_counts = _merge_counts(self._pending_step, _counts(wm, wl, w_rtt))
        sub = _concat(parts_done)
        if sub.messages.height == 0:
            self._compact_addresses()
            return Step(pl.DataFrame(), 0)
        rtt = _rtt(sub.messages, sub.links.filter(pl.col("response_mi").is_not_null()))
        counts = _counts(sub.messages, sub.links, rtt)
        self.totals.add_settled(counts)
        transactions = self._tables(sub)
        self._compact_addresses()  # settled messages are tabled: only pending ones use ids now
        return Step(transactions, counts.statuses.get("unanswered", 0))

    def _pair_step(
        self,
        m: pl.DataFrame,
        horizon: int,
        end: int,
        final: bool,
        parts_done: list[Paired],
        wait_parts: list[tuple[Paired, npt.NDArray[np.int64], npt.NDArray[np.uint64]]],
    ) -> None:
        # The capture has lasted until ``end``: a deadline before it passed unanswered.
        paired = pair(m, self.timeout_ns, end)
        pm, links = paired.messages, paired.links
        n = pm.height
        ts = pm.get_column("ts_ns").to_numpy()
        role = pm.get_column("role").to_physical().to_numpy()
        txn = pm.get_column("txn").fill_null(-1).cast(pl.Int64).to_numpy()
        q = links.get_column("query_mi").cast(pl.Int64).to_numpy()
        r = links.get_column("response_mi").fill_null(-1).cast(pl.Int64).to_numpy()
        answered = r >= 0
        if final:
            link_done = np.ones(len(q), dtype=bool)
            deadline = np.zeros(len(q), dtype=np.int64)
        else:
            last_send = np.zeros(n, dtype=np.int64)
            sends = np.isin(role, _SENDS)
            np.maximum.at(last_send, txn[sends], ts[sends])
            deadline = np.where(answered, ts[np.maximum(r, 0)], last_send[q]) + self.timeout_ns
            link_done = deadline < horizon
        link_of = np.full(n, -1, dtype=np.int64)
        link_of[q] = np.arange(len(q))
        lk = link_of[np.maximum(txn, 0)]
        has = txn >= 0
        msg_done = np.where(has, link_done[lk], final | (ts < horizon))
        waits = ~link_done & answered
        msg_waits = has & waits[lk]
        parts_done.append(_subset(paired, msg_done, link_done))
        wait_parts.append(
            (_subset(paired, msg_waits, waits), deadline[waits], _flow_hash(pm.filter(pl.Series(msg_waits))))
        )
        rest = ~msg_done & ~msg_waits
        self._pending = pm.filter(pl.Series(rest)).select(list(MESSAGES))
        rest_links = ~link_done & ~answered
        self._pending_step = _counts(
            pm.filter(pl.Series(rest)), links.filter(pl.Series(rest_links)), np.zeros(0, np.int64)
        )

    def _tables(self, sub: Paired) -> pl.DataFrame:
        """Transactions (with query facts) and unpaired responses of settled messages, into the window."""
        m = sub.messages
        ids = np.unique(np.concatenate([m.get_column("src").to_numpy(), m.get_column("dst").to_numpy()]))
        halves = self.dissector.addresses.halves
        text = self._text
        addresses = [text.get(i) or text.setdefault(i, address_text(*halves[i])) for i in ids.tolist()]
        local = Paired(
            messages=m.with_columns(
                pl.Series("src", np.searchsorted(ids, m.get_column("src").to_numpy()), dtype=pl.UInt32),
                pl.Series("dst", np.searchsorted(ids, m.get_column("dst").to_numpy()), dtype=pl.UInt32),
            ),
            links=sub.links,
        )
        files = [self.name]
        transactions = build_transactions(local, files, addresses)
        inputs = engine_inputs(
            transactions,
            query_facts(local),
            unpaired(local.messages, files, addresses),
            malformed=pl.DataFrame(schema=MALFORMED),
            issues=pl.DataFrame(schema=DECODE_ISSUES),
            captures=[self.info],
            timeout_s=self.options.timeout_s,
            thresholds=self.options.thresholds,
        )
        newest = int(m.get_column("ts_ns").max())  # type: ignore[arg-type]
        self.window.transactions.add(inputs.transactions.sort("ts", maintain_order=True), newest)
        self.window.unpaired.add(inputs.unpaired.sort("ts", maintain_order=True), newest)
        self.window.trim(self.totals.last_ts or newest)
        return inputs.transactions

    def _compact_addresses(self) -> None:
        """Forget addresses no pending message uses, once the table passes its cap."""
        table = self.dissector.addresses
        if len(table.halves) <= self.options.max_addresses:
            return
        p, w = self._pending, self._wait.messages
        cols = [f.get_column(c).to_numpy() for f in (p, w) for c in ("src", "dst")]
        used = np.unique(np.concatenate(cols))
        fresh = AddressTable()
        for i in used.tolist():
            fresh.intern(*table.halves[i])

        def renumbered(f: pl.DataFrame) -> pl.DataFrame:
            return f.with_columns(
                pl.Series("src", np.searchsorted(used, f.get_column("src").to_numpy()), dtype=pl.UInt32),
                pl.Series("dst", np.searchsorted(used, f.get_column("dst").to_numpy()), dtype=pl.UInt32),
            )

        self._pending = renumbered(p)
        self._wait = Paired(messages=renumbered(w), links=self._wait.links)
        self._wait_flow = _flow_hash(self._wait.messages)
        self.dissector.addresses = fresh
        self._text = {}

    # -- output ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The ``analyze --json`` keys for everything fed so far (pending transactions counted as a
        capture ending now would count them)."""
        return self.totals.summary(self._pending_counts)

    def take_interval(self) -> tuple[int, int]:
        out = self.interval_queries, self.interval_responses
        self.interval_queries = self.interval_responses = 0
        return out

    @property
    def pending(self) -> int:
        return self._pending.height + self._wait.messages.height

    def detect_new(self) -> pl.DataFrame:
        """Run the anomaly engine over the window; the findings not reported before (schema ANOMALIES)."""
        w = self.window
        transactions = w.transactions.frame()
        if transactions is None:
            return pl.DataFrame(schema=ANOMALIES)
        unpaired, malformed, issues = w.unpaired.frame(), w.malformed.frame(), w.issues.frame()
        assert unpaired is not None and malformed is not None and issues is not None  # added together
        counts = w.issue_counts.frame()
        assert counts is not None  # made with its schema
        issue_counts = counts.group_by("file_id", "reason").agg(
            pl.col("count").sum(), pl.col("first_ts_ns").min(), pl.col("last_ts_ns").max()
        )
        inputs = Inputs(
            transactions=transactions,
            unpaired=unpaired,
            malformed=malformed,
            issues=issues,
            issue_counts=issue_counts,
            captures=[self.info],
            timeout_s=self.options.timeout_s,
            thresholds=self.options.thresholds,
        )
        found = detect(inputs)
        now = self.totals.last_ts or 0
        fresh = []
        for i, row in enumerate(found.select("kind", "servers", "zone", "rcode").iter_rows()):
            key = (row[0], tuple(row[1] or ()), row[2], row[3])
            if key not in self._findings:
                fresh.append(i)
            self._findings[key] = now
        forget = now - 2 * w.span_ns
        if len(self._findings) > 10_000 or any(t < forget for t in self._findings.values()):
            self._findings = {k: t for k, t in self._findings.items() if t >= forget}
        return found[fresh] if fresh else found.clear()

    @property
    def retained(self) -> dict[str, int]:
        """Sizes of everything the stream keeps (what the boundedness test watches)."""
        return {
            "pending_messages": self.pending + sum(df.height for df in self._new),
            "window_rows": self.window.rows,
            "ring_bytes": self.ring.bytes,
            "addresses": len(self.dissector.addresses.halves),
            "address_texts": len(self._text),
            "findings": len(self._findings),
            "rtt_kept": int(self.totals.settled.rtt_ns.size),
        }


# -- the live loop ---------------------------------------------------------------------------
class Source(Protocol):
    """What :class:`Runner` needs from a capture (``pcapdns.sources.live.LiveCapture`` is one)."""

    name: str

    def read(self, timeout_s: float) -> FrameBatch | None: ...

    def kernel_drops(self) -> int: ...


@dataclass(slots=True)
class Tick:
    """One interval's report: the summary so far, drops, and what happened in the interval."""

    summary: dict[str, Any]
    kernel_drops: int
    queue_drops: int
    start_ns: int
    end_ns: int
    queries: int
    responses: int
    unanswered: int
    settled: pl.DataFrame
    findings: pl.DataFrame
    final: bool = False
    queued: int = 0  # batches waiting in the queue when the tick was taken (a backlog)


class Runner:
    """Capture thread -> bounded queue -> analysis (the calling thread), one :class:`Tick` per interval."""

    def __init__(
        self,
        source: Source,
        stream: Stream,
        on_tick: Callable[[Tick], None],
        *,
        interval_s: float = 1.0,
        duration_s: float | None = None,
        count: int | None = None,
        queue_batches: int = 64,
        clock_lag_s: float = 1.0,
        anomalies: bool = True,
    ) -> None:
        self.source = source
        self.stream = stream
        self.on_tick = on_tick
        self.interval_ns = int(interval_s * 1e9)
        self.duration_ns = int(duration_s * 1e9) if duration_s else None
        self.count = count
        self.queue: queue.Queue[FrameBatch] = queue.Queue(maxsize=queue_batches)
        self.queue_drops = 0
        self.lag_ns = int(clock_lag_s * 1e9)
        self.anomalies = anomalies
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture, name="pcapdns-capture", daemon=True)
        self._error: BaseException | None = None
        self._detect_cost = 0
        self._seen = 0

    def stop(self) -> None:
        self._stop.set()

    def _capture(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.source.read(0.1)
                if batch is None:
                    continue
                try:
                    self.queue.put_nowait(batch)
                except queue.Full:
                    self.queue_drops += len(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the analysis thread, which raises it
            self._error = exc
            self._stop.set()

    def run(self) -> Tick:
        """Analyse until ``duration_s``, ``count`` frames, :meth:`stop` or Ctrl-C; return the final tick."""
        start = time.time_ns()
        tick_start = start
        next_tick = start + self.interval_ns
        self._thread.start()
        try:
            while not self._stop.is_set():
                now = time.time_ns()
                if self.duration_ns is not None and now - start >= self.duration_ns:
                    break
                wait = max(0.0, min(next_tick - now, 100_000_000) / 1e9)
                try:
                    self._take(self.queue.get(timeout=wait))
                except queue.Empty:
                    pass
                now = time.time_ns()
                if now >= next_tick:
                    self._tick(tick_start, now, final=False)
                    tick_start, next_tick = now, max(next_tick + self.interval_ns, now)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop.set()
            self._thread.join(timeout=2)
        while self.count is None or self._seen < self.count:  # what was captured is analysed, not dropped
            try:
                self._take(self.queue.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise self._error
        return self._tick(tick_start, time.time_ns(), final=True)

    def _take_issues(self) -> None:
        """Problems a source found itself (a dnstap socket: a sender's broken framing)."""
        take = getattr(self.source, "take_issues", None)
        if take is not None:
            self.stream.add_issues(take())

    def _take(self, batch: FrameBatch) -> None:
        self._take_issues()
        if self.count is not None and self._seen + len(batch) >= self.count:
            batch = _head(batch, self.count - self._seen)
            self._stop.set()
        self._seen += len(batch)
        self.stream.feed(batch)

    def _tick(self, start: int, now: int, *, final: bool) -> Tick:
        self._take_issues()
        s = self.stream
        if final:
            step = s.finish(now - self.lag_ns)
        else:
            # With nothing queued, every frame older than the clock (less the ring's latency) is in.
            horizon = now - self.lag_ns if self.queue.empty() else None
            step = s.settle(horizon)
        kernel = self.source.kernel_drops()
        s.info.interface_drops = kernel + self.queue_drops
        findings = pl.DataFrame(schema=ANOMALIES)
        # The engine runs every interval unless it costs more than a fifth of the time.
        if self.anomalies and (final or time.monotonic_ns() >= self._detect_cost):
            t0 = time.monotonic_ns()
            findings = s.detect_new()
            spent = time.monotonic_ns() - t0
            self._detect_cost = t0 + 5 * spent
        queries, responses = s.take_interval()
        tick = Tick(
            summary=s.summary(),
            kernel_drops=kernel,
            queue_drops=self.queue_drops,
            start_ns=start,
            end_ns=now,
            queries=queries,
            responses=responses,
            unanswered=step.unanswered,
            settled=step.transactions,
            findings=findings,
            final=final,
            queued=self.queue.qsize(),
        )
        self.on_tick(tick)
        return tick


def _head(batch: FrameBatch, n: int) -> FrameBatch:
    return batch.head(n)
