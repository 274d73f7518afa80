"""The one place where the stages are wired together: files in, an :class:`Analysis` out.

``sources`` -> ``dissect`` (decode + dns, fast and slow paths) -> ``pairing`` -> ``tables``.
:func:`read` reads and dissects, :func:`tabulate` pairs and tabulates one host's messages,
:func:`finish` puts the hosts together and runs the anomaly engine; :func:`analyze` is the three
in a row, which the CLI, the report and the TUI call (the parallel engine runs the same steps in
its workers).  None of them wires stages itself.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from pcapdns import stepped
from pcapdns.anomalies import Thresholds
from pcapdns.dissect import Dissector
from pcapdns.dns.columnar import NameKeys
from pcapdns.errors import PcapdnsError
from pcapdns.memory import release_memory
from pcapdns.model import DEFAULT_PORTS, GENEVE_PORTS, VXLAN_PORTS, CaptureInfo, IssueLog
from pcapdns.pairing import pair
from pcapdns.schema import ANOMALIES, MALFORMED, MESSAGES
from pcapdns.sources import open_capture
from pcapdns.sources.compress import sniff_compression
from pcapdns.spill import SpillStore
from pcapdns.tables.engine import engine_inputs, issue_counts_frame, issues_frame, query_facts, unpaired
from pcapdns.tables.names import address_text
from pcapdns.tables.summary import Analysis, TransactionTotals, add_counts, count_messages
from pcapdns.tables.transactions import TRANSACTIONS, build_transactions, transaction_outcomes

Progress = Callable[[CaptureInfo], None]
# Message columns only the anomaly engine's inputs read (its query facts and unpaired responses):
# without the engine they are dropped before pairing (21 bytes a message; pairing reads QDCOUNT).
ENGINE_ONLY = (
    "idx",
    "size",
    "nscount",
    "arcount",
    "edns",
    "edns_version",
    "edns_options",
    "capture_truncated",
)
# ... and those the --json summary alone (``summary_only`` without the engine) never reads: it
# pairs, counts the messages and reads the transactions' statuses and latencies, nothing more.
SUMMARY_UNREAD = (
    *ENGINE_ONLY,
    "file_id",
    "frame",
    "flags",
    "ancount",
    "edns_udp_size",
    "do",
    "ede",
    "min_ttl",
    "dnstap_type",
    "encap",
)


@dataclass(slots=True)
class Options:
    ports: frozenset[int] = DEFAULT_PORTS
    # UDP destination ports taken apart as VXLAN and Geneve tunnels (the DNS inside is analyzed)
    vxlan_ports: frozenset[int] = VXLAN_PORTS
    geneve_ports: frozenset[int] = GENEVE_PORTS
    timeout_s: float = 5.0
    fast: bool = True  # False sends every frame down the per-packet path (for tests and debugging)
    # Below this many frames in a batch (or messages to pair) the compiled code is not worth
    # loading: the per-packet path and the Python pairing machine do it (same results).  0: always.
    fast_min_frames: int = 20000
    batch_frames: int = 262144
    thresholds: Thresholds = field(default_factory=Thresholds)
    anomalies: bool = True  # run the anomaly engine
    # The host each path was captured on (parallel to ``paths``): queries are only ever paired
    # with responses of the same host.  Empty: all files are one capture.
    hosts: tuple[str, ...] = ()
    # The files of one host are paired in steps as they are read, settled rows spilled to a
    # temporary store (pcapdns.stepped): memory bounded by the pairing window.  False: all at
    # once.  None: in steps from STEPPED_FROM_BYTES of input (or input of unknown size: compressed
    # or standard input), below which the whole-capture analysis is cheaper in time and memory.
    stepped: bool | None = None
    # Only the --json summary is read (without the engine): the stepped analysis aggregates the
    # transactions as they settle instead of keeping them (Analysis.transaction_totals; the table
    # is left empty), the whole-capture one keeps only their ``status`` and ``rtt`` columns and
    # drops the message columns neither pairing nor counting reads (SUMMARY_UNREAD).
    summary_only: bool = False
    step_frames: int = 262144  # ... settling about this many frames at a time
    temp_dir: str | None = None  # where the temporary store goes (None: $TMPDIR)


@dataclass(slots=True)
class Decoded:
    """What reading and dissecting produced, before pairing: the hand-over point for parallel reads.

    ``messages`` are in (file, frame, idx) order with addresses as ids into ``addresses`` (each
    address as the two 64-bit halves of its IPv6 form), without the ``ENGINE_ONLY`` columns when
    the anomaly engine does not run; read for the ``--json`` summary alone, with ``qname_key``
    (the question name's number, for pairing) instead of ``qname``.  ``counters`` include the
    slow path's.
    """

    captures: list[CaptureInfo]
    messages: pl.DataFrame
    addresses: list[tuple[int, int]]
    issues: IssueLog
    malformed: pl.DataFrame
    counters: Counter[str]
    #: Whether the fast path's compiled code ran: pairing and counting use it too, whatever the size.
    compiled: bool = False


def analyze(
    paths: Sequence[str],
    options: Options | None = None,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
) -> Analysis:
    """Read every capture in ``paths`` (as one analysis) and pair, count and tabulate its DNS.

    Each host's files (``options.hosts``) are read and tabulated on their own, as if they were
    one capture, then the hosts are put together (:func:`finish`): exactly what the parallel
    engine does with one host per worker.  ``progress`` is called after every batch of frames;
    ``stage`` names each step after reading.
    """
    opts = options or Options()
    groups = host_groups(opts.hosts, len(paths))
    if len(groups) <= 1 and in_steps(paths, opts.stepped):
        return finish([tabulate_in_steps(paths, opts, progress, stage)], opts, stage)
    if len(groups) <= 1:
        return assemble(read(paths, opts, progress), opts, stage)
    files = list(paths)
    parts = [
        tabulate(read([files[i] for i in ids], opts, progress, file_ids=ids), opts, files) for ids in groups
    ]
    return finish(parts, opts, stage)


# Where the analysis in steps starts to pay (mix (b) of benchmarks/make_capture.py, about 130
# bytes a packet): at 2M packets (265 MB) the whole-capture --json peaks at 590 MiB and 2.6 CPU s,
# the stepped one at 640 MiB and 4.0 s; at 10M packets 2.18 GiB against 790 MiB (docs/performance-memory.md).
STEPPED_FROM_BYTES = 384 * 2**20


def in_steps(paths: Sequence[str], stepped: bool | None) -> bool:
    """Whether ``paths`` are analysed in steps: ``stepped`` if said, else by their size."""
    if stepped is not None:
        return stepped
    total = 0
    for path in paths:
        if path == "-" or not os.path.isfile(path):
            return True
        try:
            with open(path, "rb") as f:
                if sniff_compression(f.read(8)):
                    return True
            total += os.path.getsize(path)
        except OSError:
            return True  # the reading reports it
    return total >= STEPPED_FROM_BYTES


def host_groups(hosts: Sequence[str], count: int) -> list[list[int]]:
    """The file ids of each host, hosts in order of their first file (one group without hosts)."""
    if not hosts:
        return [list(range(count))]
    groups: dict[str, list[int]] = {}
    for file_id, host in enumerate(hosts):
        groups.setdefault(host, []).append(file_id)
    return list(groups.values())


def read(
    paths: Sequence[str],
    opts: Options,
    progress: Progress | None = None,
    *,
    file_ids: Sequence[int] | None = None,
    skip: Callable[[str], None] | None = None,
) -> Decoded:
    """Read and dissect every capture in ``paths`` (numbered ``file_ids``, by default from 0).

    A file that cannot be read raises, unless ``skip`` is given: then it gets the error's line,
    and the file stays in the analysis empty (file ids do not move).
    """
    dissector = Dissector(
        opts.ports,
        fast=opts.fast,
        fast_min_frames=opts.fast_min_frames,
        vxlan_ports=opts.vxlan_ports,
        geneve_ports=opts.geneve_ports,
    )
    unread = unread_columns(opts)  # dropped batch by batch: a lower peak
    if summary_only(opts):  # question names numbered for pairing as they are read: no text made
        dissector.name_keys = NameKeys()
        unread += ("qname",)
    dissector.unread = frozenset(unread) - {"edns"}  # ... not even made by the fast path (which
    # nulls the EDNS fields of a message without EDNS by it)
    captures: list[CaptureInfo] = []
    chunks: list[pl.DataFrame] = []
    issues = IssueLog()
    for file_id, path in zip(file_ids if file_ids is not None else range(len(paths)), paths, strict=True):
        mark, had = len(chunks), len(captures)
        try:
            with open_capture(path, file_id) as capture:
                captures.append(capture.info)
                for batch in capture.batches(opts.batch_frames):
                    frame = dissector.dissect(batch)
                    if frame.height:
                        chunks.append(frame.drop(unread, strict=False))
                    del frame  # the chunk alone holds its columns (let go of as they are put together)
                    if progress is not None:
                        progress(capture.info)
                issues.extend(capture.info.issues)
        except PcapdnsError as exc:
            if skip is None:
                raise
            skip(exc.message if exc.message.startswith(path) else f"{path}: {exc.message}")
            del chunks[mark:], captures[had:]
            captures.append(CaptureInfo(file_id, path))
    tail = dissector.finish()
    if tail.height:
        chunks.append(tail.drop(unread, strict=False))
    del tail
    issues.extend(dissector.take_issues())
    counters: Counter[str] = Counter(dissector.counters)
    counters.update({f"slow_{k}": v for k, v in dissector.decoder.counters.items()})
    dissector.name_keys = None  # its copy of every name goes before the concatenation
    release_memory()  # the batches' temporaries, before the chunks are put together
    return Decoded(
        captures=captures,
        messages=put_together(chunks) if chunks else pl.DataFrame(schema=MESSAGES).drop(unread),
        addresses=dissector.addresses.halves,
        issues=issues,
        malformed=dissector.malformed(),
        counters=counters,
        compiled=dissector.compiled,
    )


def put_together(chunks: list[pl.DataFrame]) -> pl.DataFrame:
    """The ``chunks`` (one schema) as one table of contiguous columns, emptying the list.

    Column by column, each let go of from the chunks once it is copied: the chunks and the table
    are alive together one column at a time, not whole (which would hold every message twice).
    A column the same in every row (all null, say) stays one value, as polars' concatenation of
    the tables keeps it.
    """
    names = chunks[0].columns
    columns: list[pl.DataFrame] = []
    for name in names:
        columns.append(pl.concat([c.select(name) for c in chunks], rechunk=True))
        chunks[:] = [c.drop(name) for c in chunks]
        release_memory()  # the chunks' columns are mostly numpy's (glibc's heap), the table's polars'
    chunks.clear()
    return pl.concat(columns, how="horizontal")


def summary_only(opts: Options) -> bool:
    """Whether only the ``--json`` summary is read of the analysis (no engine, no table)."""
    return opts.summary_only and not opts.anomalies


def unread_columns(opts: Options) -> tuple[str, ...]:
    """The message columns nothing reads in this analysis (dropped as early as they can be)."""
    if opts.anomalies:
        return ()
    return SUMMARY_UNREAD if summary_only(opts) else ENGINE_ONLY


@dataclass(slots=True)
class Tables:
    """One host's analysis before the anomaly engine (or all of it, with one host): the unit that
    :func:`finish` puts together, and what a parallel worker sends back for a whole host.

    ``facts`` (the engine's query facts, row for row with ``transactions``) and ``unpaired`` are
    None when the engine does not run.  Tabulated in steps, ``transactions`` is a lazy scan of
    the temporary store (``store``, open until the analysis is closed) and ``facts`` None: the
    store's rows hold them beside the table's columns (``engine_rows``).
    """

    captures: list[CaptureInfo]
    message_counts: pl.DataFrame
    transactions: pl.DataFrame | pl.LazyFrame
    facts: pl.DataFrame | None
    unpaired: pl.DataFrame | None
    malformed: pl.DataFrame
    issues: pl.DataFrame
    counters: Counter[str]
    addresses: list[str]
    issue_counts: pl.DataFrame
    transaction_totals: TransactionTotals | None = None
    engine_rows: pl.LazyFrame | None = None  # the transactions with their query facts, in the store
    store: SpillStore | None = None


def assemble(decoded: Decoded, opts: Options, stage: Callable[[str], None] | None = None) -> Analysis:
    """Pair, tabulate and look for anomalies in what was read (in-process or by workers)."""
    return finish([tabulate(decoded, opts, [c.path for c in decoded.captures], stage)], opts, stage)


def tabulate(
    decoded: Decoded, opts: Options, files: Sequence[str], stage: Callable[[str], None] | None = None
) -> Tables:
    """Pair and tabulate what was read, one host's files (hosts are split by :func:`analyze` and
    the parallel engine); ``files`` names every file id of the analysis."""
    captures = decoded.captures
    release_memory()
    if stage is not None:
        stage("pairing queries and responses")
    # Address ids are whatever order they were interned in (pairing needs them consistent, not
    # sorted); the tables name addresses by their text, and list them in sorted order.
    messages, halves = decoded.messages, decoded.addresses
    decoded.messages = pl.DataFrame(schema=MESSAGES)
    if not opts.anomalies:  # nothing else reads these (read() drops them already; merge() not)
        messages = messages.drop(unread_columns(opts), strict=False)
    timeout_ns = int(opts.timeout_s * 1e9)
    end = max([0, *(c.last_ts_ns for c in captures if c.last_ts_ns is not None)])  # the host's end
    compiled = decoded.compiled or messages.height >= opts.fast_min_frames
    paired = pair(messages, timeout_ns, end, vectorized=compiled)
    del messages
    if stage is not None:
        stage("counting messages")
    counts = count_messages(paired.messages, compiled=compiled)  # before the transactions: lower peak
    release_memory()
    names = list(files)
    addresses = [address_text(hi, lo) for hi, lo in halves]  # by id, for the tables' gathers
    if stage is not None:
        stage("building the transactions table")
    facts = unpaired_rows = None
    if opts.anomalies:  # its inputs cost time and memory: only built when the engine runs
        facts, unpaired_rows = query_facts(paired), unpaired(paired.messages, names, addresses)
    if summary_only(opts):  # the summary reads the statuses and latencies, nothing else
        transactions = transaction_outcomes(paired)
    else:
        transactions = build_transactions(paired, names, addresses, consume=True)
    # Everything else about a message now lives in the transactions table (and the engine's
    # inputs): the messages keep only what the counts read, a few bytes each.
    return Tables(
        captures=captures,
        message_counts=counts,
        transactions=transactions,
        facts=facts,
        unpaired=unpaired_rows,
        malformed=decoded.malformed,
        issues=issues_frame(decoded.issues),
        issue_counts=issue_counts_frame(decoded.issues),
        counters=decoded.counters,
        # listed in numeric order, the same however the capture was read
        addresses=[addresses[i] for i in sorted(range(len(halves)), key=halves.__getitem__)],
    )


def tabulate_in_steps(
    paths: Sequence[str],
    opts: Options,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
) -> Tables:
    """Read, pair and tabulate ``paths`` (one host) in steps, memory bounded by the pairing
    window (:mod:`pcapdns.stepped`)."""
    dissector = Dissector(
        opts.ports,
        fast=opts.fast,
        fast_min_frames=opts.fast_min_frames,
        vxlan_ports=opts.vxlan_ports,
        geneve_ports=opts.geneve_ports,
    )
    t = stepped.tabulate_in_steps(
        paths,
        dissector,
        timeout_s=opts.timeout_s,
        batch_frames=opts.batch_frames,
        anomalies=opts.anomalies,
        summary_only=opts.summary_only and not opts.anomalies,
        progress=progress,
        stage=stage,
        compiled_min=opts.fast_min_frames,
        step_frames=opts.step_frames,
        temp_dir=opts.temp_dir,
    )
    halves = t.halves
    addresses = [address_text(hi, lo) for hi, lo in halves]
    return Tables(
        captures=t.captures,
        message_counts=t.message_counts,
        transactions=t.transactions.select(list(TRANSACTIONS)),
        facts=None,
        unpaired=t.unpaired,
        malformed=t.malformed,
        issues=issues_frame(t.issues),
        issue_counts=issue_counts_frame(t.issues),
        counters=t.counters,
        addresses=[addresses[i] for i in sorted(range(len(halves)), key=halves.__getitem__)],
        transaction_totals=t.totals,
        engine_rows=t.transactions if opts.anomalies else None,
        store=t.store,
    )


def empty_tables(captures: list[CaptureInfo], opts: Options, files: Sequence[str]) -> Tables:
    """The tables of files that could not be read (kept, empty, so that file ids do not move)."""
    nothing = Decoded(
        captures, pl.DataFrame(schema=MESSAGES), [], IssueLog(), pl.DataFrame(schema=MALFORMED), Counter()
    )
    return tabulate(nothing, opts, files)


def finish(parts: Sequence[Tables], opts: Options, stage: Callable[[str], None] | None = None) -> Analysis:
    """Put the hosts' tables together (in the order given) and run the anomaly engine over them.

    Every table lists host after host (each host's rows in time order); the engine sorts what it
    needs by time itself.
    """
    first = parts[0]
    if len(parts) > 1 and any(p.store is not None for p in parts):
        raise ValueError("tables read from a temporary store are one host's: not put together")
    if len(parts) == 1:
        transactions, facts, unpaired_rows = first.transactions, first.facts, first.unpaired
        message_counts, malformed, issues = first.message_counts, first.malformed, first.issues
        issue_counts = first.issue_counts
        counters = first.counters
        captures, addresses = first.captures, first.addresses
    else:
        if stage is not None:
            stage("putting the hosts together")
        transactions = pl.concat([p.transactions for p in parts if isinstance(p.transactions, pl.DataFrame)])
        facts = (
            pl.concat([p.facts for p in parts if p.facts is not None]) if first.facts is not None else None
        )
        unpaired_rows = None
        if first.unpaired is not None:
            unpaired_rows = pl.concat([p.unpaired for p in parts if p.unpaired is not None])
        message_counts = add_counts([p.message_counts for p in parts])
        malformed = pl.concat([p.malformed for p in parts])
        issues = pl.concat([p.issues for p in parts])
        issue_counts = pl.concat([p.issue_counts for p in parts]).sort("file_id", "reason")
        counters = Counter[str]()
        for p in parts:
            counters.update(p.counters)
        captures = sorted((c for p in parts for c in p.captures), key=lambda c: c.file_id)
        addresses = sorted({a for p in parts for a in p.addresses})
    anomalies = pl.DataFrame(schema=ANOMALIES)
    if (facts is not None or first.engine_rows is not None) and unpaired_rows is not None:
        if stage is not None:
            stage("looking for anomalies: preparing the inputs")
        from pcapdns.anomalies.rules import detect  # only when the engine runs

        # From the store, each rule reads only its columns of the table and its facts (side by
        # side in the store), and frees them before the next: nothing holds the whole table.
        stored = first.engine_rows
        rows = pl.DataFrame(schema=TRANSACTIONS) if stored is not None else transactions
        assert isinstance(rows, pl.DataFrame)
        anomalies = detect(
            engine_inputs(
                rows,
                facts,
                unpaired_rows,
                malformed=malformed,
                issues=issues,
                issue_counts=issue_counts,
                captures=captures,
                timeout_s=opts.timeout_s,
                thresholds=opts.thresholds,
            ),
            stage,
            stored=stored,
        )
        del rows
    return Analysis(
        captures=captures,
        message_counts=message_counts,
        table=transactions,
        store=first.store,
        malformed=malformed,
        issues=issues,
        issue_counts=issue_counts,
        anomalies=anomalies,
        counters=counters,
        timeout_s=opts.timeout_s,
        addresses=addresses,
        transaction_totals=first.transaction_totals if len(parts) == 1 else None,
    )
