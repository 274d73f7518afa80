"""File analysis in steps: read, dissect and settle batch by batch, spilling settled rows to disk.

The whole-capture analysis (:func:`pcapdns.pipeline.read` then ``tabulate``) holds every message
until it pairs them.  :func:`tabulate_in_steps` pairs every batch's messages as they are read,
with a :class:`~pcapdns.settling.Settler` (bounded pending state), and writes the settled
transactions (with the engine's query facts) and unpaired responses to a
:class:`~pcapdns.spill.SpillStore`; the message counts are added up as they settle.  What stays in
memory while reading is one ``timeout`` of traffic plus the settled rows not yet in order.

The chunks are written in the order the whole-capture tables list their rows (by each row's first
message's time, then its position in the capture): a settled row is held back until every earlier
row has settled.  So the tables read back from the store equal the whole-capture tables row for row.
The transactions table is not read back: it is handed on as a lazy scan of the store
(:attr:`SteppedTables.transactions`), which stays open (:attr:`SteppedTables.store`) until its
reader closes it, so that summaries, exports and queries read only the columns and rows they need.
When only the ``--json`` summary is wanted (``summary_only``), no table is kept at all: statuses
are counted as transactions settle and only their latencies go to the store, whose percentiles
are then found without loading them (:func:`~pcapdns.tables.latency.latency_ms_lazy`).

A transaction settles only when every frame still to come is later than its deadline: later than
the oldest frame of the last batch, and than the first frame of every file not read yet (several
files are one capture in the order given, and may overlap in time).  Frames are expected in time
order within a file up to ``REORDER_S``; a frame further out of order than that is counted
(``counters['late_for_settling']``), since its transaction may have settled without it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.dissect import Dissector
from pcapdns.errors import PcapdnsError
from pcapdns.memory import release_memory
from pcapdns.model import CaptureInfo, IssueLog
from pcapdns.pairing import Paired
from pcapdns.settling import EMPTY, Settler
from pcapdns.sources import open_capture
from pcapdns.spill import SpillStore
from pcapdns.tables.engine import query_facts, unpaired
from pcapdns.tables.latency import latency_ms_lazy
from pcapdns.tables.names import address_text
from pcapdns.tables.summary import TransactionTotals, add_counts, count_messages
from pcapdns.tables.transactions import TRANSACTIONS, build_transactions

REORDER_S = 1.0  # frames may be this much out of time order without changing a result
SEQ = "seq"  # each message's position in the capture (pair() orders by time, then by this)
_FOLD = 32  # message counts are added up every this many steps


@dataclass(slots=True)
class SteppedTables:
    """What :func:`tabulate_in_steps` read, counted and tabulated (one host's tables)."""

    captures: list[CaptureInfo]
    message_counts: pl.DataFrame
    # the transactions table in the store (with the engine's query facts beside its columns when
    # the engine runs), as a lazy scan; empty with summary_only
    transactions: pl.LazyFrame
    unpaired: pl.DataFrame | None
    malformed: pl.DataFrame
    issues: IssueLog
    counters: Counter[str]
    halves: list[tuple[int, int]]
    spilled_bytes: int
    totals: TransactionTotals | None  # with summary_only (``transactions`` is then empty)
    store: SpillStore | None  # open while ``transactions`` reads from it (None: closed, nothing kept)


class _InOrder:
    """Settled rows held until every row before them has settled, then released in order.

    A row's place is its first message's: by time, then position in the capture (the order in
    which :func:`~pcapdns.pairing.pair` numbers the messages of a whole capture).
    """

    def __init__(self) -> None:
        self.ts: list[npt.NDArray[np.int64]] = []
        self.seq: list[npt.NDArray[np.uint64]] = []
        self.rows: list[pl.DataFrame] = []

    def add(self, ts: npt.NDArray[np.int64], seq: npt.NDArray[np.uint64], rows: pl.DataFrame) -> None:
        if rows.height:
            self.ts.append(ts)
            self.seq.append(seq)
            self.rows.append(rows)

    def release(self, below: tuple[int, int] | None) -> pl.DataFrame | None:
        """The rows placed before ``below`` (time, position; all with None), in order."""
        if not self.rows:
            return None
        ts, seq = np.concatenate(self.ts), np.concatenate(self.seq)
        rows = pl.concat(self.rows, how="vertical_relaxed")
        order = np.lexsort((seq, ts))
        ts, seq = ts[order], seq[order]
        if below is None:
            cut = ts.size
        else:
            before = (ts < below[0]) | ((ts == below[0]) & (seq < below[1]))
            cut = int(np.count_nonzero(before))  # a prefix: the keys are sorted
        keep = order[cut:]
        self.ts, self.seq, self.rows = ([ts[cut:]], [seq[cut:]], [rows[keep]]) if keep.size else ([], [], [])
        return rows[order[:cut]] if cut else None


class _Steps:
    """The settling loop's state: the settler, the rows waiting for their turn, the store."""

    def __init__(
        self,
        dissector: Dissector,
        store: SpillStore,
        timeout_ns: int,
        anomalies: bool,
        summary_only: bool,
        compiled_min: int,
    ) -> None:
        self.dissector = dissector
        self.store = store
        self.settler = Settler(timeout_ns, order=SEQ, compiled_min=compiled_min)
        self.compiled_min = compiled_min
        self.anomalies = anomalies
        self.summary_only = summary_only
        self.statuses: Counter[str] = Counter()
        self.transactions = _InOrder()
        self.unpaired = _InOrder()
        self.counts: list[pl.DataFrame] = []
        self.texts: list[str] = []
        self.files: list[str] = []
        self.new: list[pl.DataFrame] = []
        self.seq = 0
        self.horizon = 0
        self.late = 0

    def add(self, messages: pl.DataFrame) -> None:
        """Messages of one batch, in capture order."""
        if messages.height == 0:
            return
        self.late += int((messages.get_column("ts_ns") < self.horizon).sum())
        seq = pl.int_range(self.seq, self.seq + messages.height, dtype=pl.UInt64, eager=True).alias(SEQ)
        self.new.append(messages.with_columns(seq))
        self.seq += messages.height

    def step(self, horizon: int, end: int, *, final: bool) -> None:
        """Settle what can be settled before ``horizon``; write what is in order to the store."""
        self.horizon = max(self.horizon, horizon)
        new = pl.concat(self.new) if self.new else self.settler.pending.clear()
        self.new = []
        settled = self.settler.step(new, self.horizon, end, final=final)
        if settled.messages.height:
            self._tabulate(settled)
        below = None
        if not final:  # before every held message and every message to come (not before the horizon)
            below = min([*(_first(f) for f in self.settler.held_messages if f.height), (self.horizon, 0)])
        release_memory()  # what pairing and tabulating the step freed, before the next batch
        transactions = self.transactions.release(below)
        if transactions is not None:
            self.store.write("transactions", transactions)
        responses = self.unpaired.release(below)
        if responses is not None:
            self.store.write("unpaired", responses)

    def _tabulate(self, settled: Paired) -> None:
        m = settled.messages
        self.counts.append(count_messages(m, compiled=m.height >= self.compiled_min))
        if len(self.counts) >= _FOLD:
            self.counts = [add_counts(self.counts)]
        halves = self.dissector.addresses.halves
        self.texts.extend(address_text(hi, lo) for hi, lo in halves[len(self.texts) :])
        ts, seq = m.get_column("ts_ns").to_numpy(), m.get_column(SEQ).to_numpy()
        first_query = settled.links.sort("query_mi").get_column("query_mi").to_numpy()
        if self.anomalies:
            responses = m.get_column("role").is_in(["duplicate_response", "orphan_response"]).to_numpy()
            self.unpaired.add(ts[responses], seq[responses], unpaired(m, self.files, self.texts))
            facts = query_facts(settled)
            rows = pl.concat([build_transactions(settled, self.files, self.texts), facts], how="horizontal")
        elif self.summary_only:  # counted, not kept: the statuses here, the latencies in the store
            rows = build_transactions(settled, self.files, self.texts).select("status", "rtt")
            counted = rows.get_column("status").value_counts().iter_rows()
            self.statuses.update({str(status): int(n) for status, n in counted})
            self.store.write("rtt", rows.select("rtt").drop_nulls())
            return
        else:
            rows = build_transactions(settled, self.files, self.texts)
        self.transactions.add(ts[first_query], seq[first_query], rows)


def _first(messages: pl.DataFrame) -> tuple[int, int]:
    """The (time, position) of the first of ``messages`` (without sorting them)."""
    ts = messages.get_column("ts_ns").to_numpy()
    earliest = ts.min()
    return int(earliest), int(messages.get_column(SEQ).to_numpy()[ts == earliest].min())


def _later_files_start(paths: Sequence[str]) -> list[int]:
    """For each file, the earliest first timestamp of the files after it (a large number for the
    last; 0, nothing settles, when a later file's first frame cannot be read ahead: stdin)."""
    starts = [_first_ts(p) for p in paths[1:]]
    out, earliest = [], 1 << 62
    for start in reversed(starts):
        earliest = min(earliest, 0 if start is None else start)
        out.append(earliest)
    return [*reversed(out), 1 << 62]


def _first_ts(path: str) -> int | None:
    """The first record's timestamp (one small window read), None when it cannot be read ahead."""
    if path == "-":
        return None
    try:
        with open_capture(path, chunk_size=4096) as capture:
            for batch in capture.batches(1):
                if len(batch):
                    return int(batch.ts_ns.min())
    except PcapdnsError:
        return None  # reading it for real says why
    return 1 << 62  # no frame: nothing to wait for


def tabulate_in_steps(
    paths: Sequence[str],
    dissector: Dissector,
    *,
    timeout_s: float,
    batch_frames: int,
    anomalies: bool,
    summary_only: bool = False,
    progress: Callable[[CaptureInfo], None] | None = None,
    stage: Callable[[str], None] | None = None,
    compiled_min: int = 0,
    step_frames: int = 262144,
    temp_dir: str | None = None,
) -> SteppedTables:
    """Read ``paths`` as one capture and tabulate it in steps of about ``step_frames`` frames.

    ``summary_only`` (without ``anomalies``): the transactions are aggregated, not kept, and the
    store is removed before this returns.  Otherwise the store stays open for the lazy
    transactions table (the caller closes it, or it goes with the last reference to it); it is
    removed if this raises.  Below ``compiled_min`` messages a step pairs and counts without
    compiled code.
    """
    timeout_ns = int(timeout_s * 1e9)
    reorder_ns = int(REORDER_S * 1e9)
    captures: list[CaptureInfo] = []
    issues = IssueLog()
    store = SpillStore(temp_dir).__enter__()
    try:
        steps = _Steps(dissector, store, timeout_ns, anomalies, summary_only, compiled_min)
        end, unsettled = 0, 0
        # Every frame still to come is later than the oldest frame of the last batch and than the
        # first frame of every file not read yet (files may overlap in time).
        unread_from = _later_files_start(paths)
        for file_id, path in enumerate(paths):
            with open_capture(path, file_id) as capture:
                captures.append(capture.info)
                steps.files = [c.path for c in captures]
                for batch in capture.batches(batch_frames):
                    steps.add(dissector.dissect(batch))
                    if len(batch):
                        end = max(end, int(batch.ts_ns.max()))
                        unsettled += len(batch)
                        if unsettled >= step_frames:
                            oldest = min(int(batch.ts_ns.min()), unread_from[file_id])
                            steps.step(oldest - reorder_ns, end, final=False)
                            unsettled = 0
                    if progress is not None:
                        progress(capture.info)
                issues.extend(capture.info.issues)
        steps.add(dissector.finish())
        issues.extend(dissector.take_issues())
        if stage is not None:
            stage("pairing the last queries and responses")
        # the capture's end, as the whole-capture analysis takes it
        end = max([0, *(c.last_ts_ns for c in captures if c.last_ts_ns is not None)])
        steps.step(0, end, final=True)
        schema = dict(TRANSACTIONS)
        if anomalies:
            schema |= dict(query_facts(EMPTY).schema)
        table = store.scan("transactions", schema)
        totals = None
        if summary_only:
            rtt = store.scan("rtt", {"rtt": TRANSACTIONS["rtt"]})
            totals = TransactionTotals(statuses=dict(steps.statuses), latency_ms=latency_ms_lazy(rtt))
        unpaired_rows = None
        if anomalies:
            empty = unpaired(EMPTY.messages, steps.files, [])
            unpaired_rows = store.scan("unpaired", dict(empty.schema)).collect()
        counters: Counter[str] = Counter(dissector.counters)
        counters.update({f"slow_{k}": v for k, v in dissector.decoder.counters.items()})
        if steps.late:
            counters["late_for_settling"] += steps.late
        counts = add_counts(steps.counts) if steps.counts else count_messages(EMPTY.messages, compiled=False)
        if summary_only:
            table = pl.LazyFrame(schema=schema)
            store.close()
        return SteppedTables(
            captures=captures,
            message_counts=counts,
            transactions=table,
            unpaired=unpaired_rows,
            malformed=dissector.malformed(),
            issues=issues,
            counters=counters,
            halves=dissector.addresses.halves,
            spilled_bytes=store.bytes,
            totals=totals,
            store=None if summary_only else store,
        )
    except BaseException:
        store.close()
        raise
