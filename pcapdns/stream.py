"""Streaming analysis: the file pipeline's stages, fed batch by batch, with bounded state.

:class:`Stream` takes :class:`~pcapdns.model.FrameBatch` es (from a live capture, or from a file in
small batches), decodes them with the same :class:`~pcapdns.dissect.Dissector`, and pairs them in
steps with a :class:`~pcapdns.settling.Settler` (the same :func:`~pcapdns.pairing.pair`, with
bounded pending state).

Settled transactions are counted into :class:`~pcapdns.tables.totals.Totals` (the ``analyze
--json`` keys) and kept for a while in a rolling :class:`~pcapdns.retained.Window` that the anomaly
engine runs over; new findings are reported once, with their onset.  Because dropping a settled
transaction cannot change how any later message pairs, the totals after :meth:`Stream.finish`
equal the file analysis of the same frames.  Memory is bounded by the traffic of one ``timeout``
(pending), the window's size cap, and the address table's cap -- never by how long the stream runs.
The live loop around it is :class:`pcapdns.live.runner.Runner`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

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
from pcapdns.pairing import Paired
from pcapdns.retained import FrameRing, Window
from pcapdns.schema import ANOMALIES, DECODE_ISSUES, MALFORMED, MESSAGES
from pcapdns.settling import Settler, latencies, pair_counts
from pcapdns.tables.engine import engine_inputs, issue_counts_frame, issues_frame, query_facts, unpaired
from pcapdns.tables.names import address_text
from pcapdns.tables.totals import Totals
from pcapdns.tables.transactions import build_transactions


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
        self.settler = Settler(self.timeout_ns)
        self._new: list[pl.DataFrame] = []
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
        settled = self.settler.step(new, horizon, end, final=final)
        if settled.messages.height == 0:
            self._compact_addresses()
            return Step(pl.DataFrame(), 0)
        rtt = latencies(settled.messages, settled.links.filter(pl.col("response_mi").is_not_null()))
        counts = pair_counts(settled.messages, settled.links, rtt)
        self.totals.add_settled(counts)
        transactions = self._tables(settled)
        self._compact_addresses()  # settled messages are tabled: only held ones use ids now
        return Step(transactions, counts.statuses.get("unanswered", 0))

    def _tables(self, sub: Paired) -> pl.DataFrame:
        """Transactions (with query facts) and unpaired responses of settled messages, into the window."""
        m = sub.messages
        src, dst = m.get_column("src").to_numpy(), m.get_column("dst").to_numpy()
        ids = np.unique(np.concatenate([src, dst]))
        halves = self.dissector.addresses.halves
        text = self._text
        addresses = [text.get(i) or text.setdefault(i, address_text(*halves[i])) for i in ids.tolist()]
        # Each address id becomes its position in ``ids``: a table lookup (a binary search per
        # message costs several times more on a busy step's few hundred thousand messages).
        position = np.zeros(int(ids[-1]) + 1 if ids.size else 0, dtype=np.uint32)
        position[ids] = np.arange(ids.size, dtype=np.uint32)
        local = Paired(
            messages=m.with_columns(
                pl.Series("src", position[src], dtype=pl.UInt32),
                pl.Series("dst", position[dst], dtype=pl.UInt32),
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
        """Forget addresses no held message uses, once the table passes its cap."""
        table = self.dissector.addresses
        if len(table.halves) <= self.options.max_addresses:
            return
        used = self.settler.addresses_in_use()
        fresh = AddressTable()
        for i in used.tolist():
            fresh.intern(*table.halves[i])
        self.settler.renumber_addresses(used)
        self.dissector.addresses = fresh
        self._text = {}

    # -- output ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The ``analyze --json`` keys for everything fed so far (pending transactions counted as a
        capture ending now would count them)."""
        return self.totals.summary(self.settler.held_counts)

    def take_interval(self) -> tuple[int, int]:
        out = self.interval_queries, self.interval_responses
        self.interval_queries = self.interval_responses = 0
        return out

    @property
    def pending(self) -> int:
        return self.settler.held

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
