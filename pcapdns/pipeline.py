"""The one place where the stages are wired together: files in, an :class:`Analysis` out.

``sources`` -> ``dissect`` (decode + dns, fast and slow paths) -> ``pairing`` -> ``tables``.
The CLI, the report and (later) the TUI all call :func:`analyze`; none of them wires stages itself.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from pcapdns.anomalies import Thresholds, detect
from pcapdns.dissect import Dissector
from pcapdns.model import DEFAULT_PORTS, CaptureInfo, DecodeIssue
from pcapdns.pairing import pair
from pcapdns.schema import ANOMALIES, MESSAGES
from pcapdns.sources import open_capture
from pcapdns.tables.engine import engine_inputs, issues_frame
from pcapdns.tables.names import address_text
from pcapdns.tables.summary import Analysis
from pcapdns.tables.transactions import build_transactions

Progress = Callable[[CaptureInfo], None]


@dataclass(slots=True)
class Options:
    ports: frozenset[int] = DEFAULT_PORTS
    timeout_s: float = 5.0
    fast: bool = True  # False sends every frame down the per-packet path (for tests and debugging)
    batch_frames: int = 65536
    thresholds: Thresholds = field(default_factory=Thresholds)
    anomalies: bool = True  # run the anomaly engine
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
    dissector = Dissector(opts.ports, fast=opts.fast)
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
    _release_memory()
    if stage is not None:
        stage("pairing queries and responses")
    messages = pl.concat(chunks) if chunks else pl.DataFrame(schema=MESSAGES)
    ends = [c.last_ts_ns for c in captures if c.last_ts_ns is not None]
    timeout_ns = int(opts.timeout_s * 1e9)
    paired = pair(messages, timeout_ns, max(ends) if ends else 0)
    del chunks, messages
    _release_memory()
    files = [c.path for c in captures]
    counters: Counter[str] = Counter(dissector.counters)
    counters.update({f"slow_{k}": v for k, v in dissector.decoder.counters.items()})
    addresses = [address_text(hi, lo) for hi, lo in dissector.addresses.halves]
    if stage is not None:
        stage("building the transactions table")
    transactions = build_transactions(paired, files, addresses)
    links = paired.links
    anomaly_inputs = engine_inputs(
        paired,
        transactions,
        files,
        addresses,
        malformed=dissector.malformed(),
        issues=issues_frame(issues),
        captures=captures,
        timeout_s=opts.timeout_s,
        thresholds=opts.thresholds,
    )
    # Addresses, names and EDE lists now live in the transactions table; the messages keep what
    # the counts need (memory grows with the transactions kept, not with every message's text).
    messages_kept = paired.messages.drop(["qname", "ede"])
    del paired
    if stage is not None and opts.anomalies:
        stage("looking for anomalies")
    anomalies = detect(anomaly_inputs) if opts.anomalies else pl.DataFrame(schema=ANOMALIES)
    return Analysis(
        captures=captures,
        messages=messages_kept,
        links=links,
        transactions=transactions,
        malformed=anomaly_inputs.malformed,
        issues=anomaly_inputs.issues,
        anomalies=anomalies,
        counters=counters,
        timeout_s=opts.timeout_s,
        addresses=addresses,
    )
