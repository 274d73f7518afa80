"""The one place where the stages are wired together: files in, an :class:`Analysis` out.

``sources`` -> ``dissect`` (decode + dns, fast and slow paths) -> ``pairing`` -> ``tables``.
The CLI, the report and (later) the TUI all call :func:`analyze`; none of them wires stages itself.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pcapdns.anomalies import Thresholds, detect
from pcapdns.dissect import Dissector
from pcapdns.jit import loaded
from pcapdns.model import DEFAULT_PORTS, CaptureInfo, DecodeIssue
from pcapdns.pairing import pair_hosts
from pcapdns.schema import ANOMALIES, MESSAGES
from pcapdns.sources import open_capture
from pcapdns.tables.engine import engine_inputs, issues_frame
from pcapdns.tables.names import address_text
from pcapdns.tables.summary import COUNTED, Analysis
from pcapdns.tables.transactions import build_transactions

Progress = Callable[[CaptureInfo], None]


@dataclass(slots=True)
class Options:
    ports: frozenset[int] = DEFAULT_PORTS
    timeout_s: float = 5.0
    fast: bool = True  # False sends every frame down the per-packet path (for tests and debugging)
    # Below this many frames in a batch (or messages to pair) the compiled code is not worth
    # loading: the per-packet path and the Python pairing machine do it (same results).  0: always.
    fast_min_frames: int = 20000
    batch_frames: int = 65536
    thresholds: Thresholds = field(default_factory=Thresholds)
    anomalies: bool = True  # run the anomaly engine
    # The host each path was captured on (parallel to ``paths``): queries are only ever paired
    # with responses of the same host.  Empty: all files are one capture.
    hosts: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


def _release_memory() -> None:
    """Hand freed heap pages back to the OS between stages (glibc only; a no-op elsewhere).

    numpy's many batch-sized temporaries are freed to glibc's heap, which keeps them mapped; the
    next stage's peak then stacks on top.  ``malloc_trim`` returns them (as Dask's workers do).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(slots=True)
class Decoded:
    """What reading and dissecting produced, before pairing: the hand-over point for parallel reads.

    ``messages`` are in (file, frame, idx) order with addresses as ids into ``addresses`` (each
    address as the two 64-bit halves of its IPv6 form); ``counters`` include the slow path's.
    """

    captures: list[CaptureInfo]
    messages: pl.DataFrame
    addresses: list[tuple[int, int]]
    issues: list[DecodeIssue]
    malformed: pl.DataFrame
    counters: Counter[str]


def analyze(
    paths: Sequence[str],
    options: Options | None = None,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
) -> Analysis:
    """Read every capture in ``paths`` (as one analysis) and pair, count and tabulate its DNS.

    ``progress`` is called after every batch of frames; ``stage`` names each step after reading.
    """
    opts = options or Options()
    return assemble(read(paths, opts, progress), opts, stage)


def read(paths: Sequence[str], opts: Options, progress: Progress | None = None) -> Decoded:
    """Read and dissect every capture in ``paths``: the messages before pairing."""
    dissector = Dissector(opts.ports, fast=opts.fast, fast_min_frames=opts.fast_min_frames)
    captures: list[CaptureInfo] = []
    chunks: list[pl.DataFrame] = []
    issues: list[DecodeIssue] = []
    for file_id, path in enumerate(paths):
        with open_capture(path, file_id) as capture:
            captures.append(capture.info)
            for batch in capture.batches(opts.batch_frames):
                frame = dissector.dissect(batch)
                if frame.height:
                    chunks.append(frame)
                if progress is not None:
                    progress(capture.info)
            issues.extend(capture.info.issues)
    tail = dissector.finish()
    if tail.height:
        chunks.append(tail)
    issues.extend(dissector.take_issues())
    counters: Counter[str] = Counter(dissector.counters)
    counters.update({f"slow_{k}": v for k, v in dissector.decoder.counters.items()})
    return Decoded(
        captures=captures,
        messages=pl.concat(chunks) if chunks else pl.DataFrame(schema=MESSAGES),
        addresses=dissector.addresses.halves,
        issues=issues,
        malformed=dissector.malformed(),
        counters=counters,
    )


def _canonical_addresses(decoded: Decoded) -> tuple[pl.DataFrame, list[tuple[int, int]]]:
    """Number addresses in sorted order, whoever interned them first (same ids however read)."""
    halves = decoded.addresses
    order = sorted(range(len(halves)), key=halves.__getitem__)
    if order == list(range(len(halves))):
        return decoded.messages, halves
    rank = np.empty(len(order), dtype=np.uint32)
    rank[np.array(order, dtype=np.int64)] = np.arange(len(order), dtype=np.uint32)
    m = decoded.messages
    src, dst = (rank[m.get_column(c).to_numpy()] for c in ("src", "dst"))
    return m.with_columns(pl.Series("src", src), pl.Series("dst", dst)), [halves[i] for i in order]


def assemble(decoded: Decoded, opts: Options, stage: Callable[[str], None] | None = None) -> Analysis:
    """Pair, tabulate and look for anomalies in what was read (in-process or by workers)."""
    captures = decoded.captures
    _release_memory()
    if stage is not None:
        stage("pairing queries and responses")
    messages, halves = _canonical_addresses(decoded)
    decoded.messages = pl.DataFrame(schema=MESSAGES)
    timeout_ns = int(opts.timeout_s * 1e9)
    hosts = opts.hosts or ("",) * len(captures)
    compiled = loaded() or messages.height >= opts.fast_min_frames
    paired = pair_hosts(messages, timeout_ns, captures, hosts, vectorized=compiled)
    del messages
    _release_memory()
    files = [c.path for c in captures]
    counters = decoded.counters
    addresses = [address_text(hi, lo) for hi, lo in halves]
    if stage is not None:
        stage("building the transactions table")
    transactions = build_transactions(paired, files, addresses)
    links = paired.links
    malformed = decoded.malformed
    issues_table = issues_frame(decoded.issues)
    anomaly_inputs = None
    if opts.anomalies:  # its inputs cost time and memory: only built when the engine runs
        anomaly_inputs = engine_inputs(
            paired,
            transactions,
            files,
            addresses,
            malformed=malformed,
            issues=issues_table,
            captures=captures,
            timeout_s=opts.timeout_s,
            thresholds=opts.thresholds,
        )
    # Everything else about a message now lives in the transactions table (and the engine's
    # inputs): the messages keep only what the counts read, a few bytes each.
    messages_kept = paired.messages.select(COUNTED)
    del paired
    if stage is not None and opts.anomalies:
        stage("looking for anomalies")
    anomalies = detect(anomaly_inputs) if anomaly_inputs is not None else pl.DataFrame(schema=ANOMALIES)
    return Analysis(
        captures=captures,
        messages=messages_kept,
        links=links,
        transactions=transactions,
        malformed=malformed,
        issues=issues_table,
        anomalies=anomalies,
        counters=counters,
        timeout_s=opts.timeout_s,
        addresses=addresses,
    )
