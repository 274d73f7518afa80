"""What one worker does with one piece of work: read a file (or a span of one) to message batches.

The fast path runs here.  Frames whose messages depend on other frames (TCP segments, IP fragments,
and the odd frames only the per-packet decoder reads) are not decoded here but sent back as they
are: stream reassembly keeps state across frames, so the parent feeds all of them, in capture
order, to a single decoder -- exactly as a single process would.  They are few, so the parent's
share of the work stays small.  Damaged UDP messages are parsed here (the per-message parser needs
no state); their malformations come back with the piece.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from pcapdns.decode.columnar import L4Columns
from pcapdns.dissect import Dissector
from pcapdns.errors import PcapdnsError
from pcapdns.model import GENEVE_PORTS, VXLAN_PORTS, CaptureInfo, FrameBatch, IssueLog, Payload
from pcapdns.pipeline import Options, Tables, read, tabulate
from pcapdns.schema import MALFORMED, MESSAGES
from pcapdns.sources import Span, open_capture


@dataclass(frozen=True, slots=True)
class Task:
    """Read ``path`` (only ``span`` of it when given) as file ``file_id`` of the analysis."""

    file_id: int
    path: str
    span: Span | None
    ports: frozenset[int]
    fast: bool
    batch_frames: int
    fast_min_frames: int = 0
    vxlan_ports: frozenset[int] = VXLAN_PORTS
    geneve_ports: frozenset[int] = GENEVE_PORTS

    @property
    def size(self) -> int:
        """Bytes of the input this task covers (for progress)."""
        if self.span is None:
            return 0
        return self.span.stop - (0 if self.span.first_frame == 1 else self.span.start)  # + headers


@dataclass(slots=True)
class Piece:
    """A task's result: fast-path messages with addresses as ids into ``addresses``."""

    task: Task
    info: CaptureInfo | None
    messages: pl.DataFrame
    addresses: list[tuple[int, int]]
    counters: Counter[str]
    slow: list[FrameBatch] = field(default_factory=list)  # frames for the parent's slow path
    # per batch of ``slow``: the latest time of the frames settled here before each of its frames
    # (-1: none), and after its last (see :meth:`pcapdns.dissect.Dissector.dissect_passing`)
    passed: list[tuple[npt.NDArray[np.int64], int]] = field(default_factory=list)
    malformed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MALFORMED))
    error: str = ""
    issues: IssueLog = field(default_factory=IssueLog)  # of the frames settled in bulk here


def _compact(batch: FrameBatch, rows: npt.NDArray[np.int64]) -> FrameBatch:
    """The frames ``rows`` of ``batch`` in a buffer of their own (a chunk is many megabytes)."""
    data = [batch.frame_bytes(i) for i in rows.tolist()]
    caplen = batch.caplen[rows]
    off = np.zeros(len(rows), dtype=np.int64)
    if len(rows) > 1:
        off[1:] = np.cumsum(caplen[:-1].astype(np.int64))
    return FrameBatch(
        file_id=batch.file_id,
        buf=b"".join(data),
        data_off=off,
        caplen=caplen,
        wirelen=batch.wirelen[rows],
        ts_ns=batch.ts_ns[rows],
        linktype=batch.linktype[rows],
        frame=batch.frame[rows],
    )


class _FastOnly(Dissector):
    """A dissector whose slow path only puts the frames aside, for the parent."""

    def __init__(self, task: Task) -> None:
        super().__init__(
            task.ports,
            fast=task.fast,
            fast_min_frames=task.fast_min_frames,
            vxlan_ports=task.vxlan_ports,
            geneve_ports=task.geneve_ports,
        )
        # Every batch the fast path can take goes to it, whatever its size: the slow path here only
        # sends frames to the parent, which costs more than loading compiled code.
        self.compiled = True
        self.deferred: list[FrameBatch] = []
        self.passed: list[tuple[npt.NDArray[np.int64], int]] = []

    def dissect(self, batch: FrameBatch) -> pl.DataFrame:
        """As a dissector does; the times of the frames settled here between the frames put
        aside are kept too, so that the parent's decoder times out fragments as one would."""
        before = len(self.deferred)
        out = super().dissect(batch)
        if len(self.deferred) == before and len(batch):  # nothing put aside: time passed all the same
            self.deferred.append(_compact(batch, np.zeros(0, dtype=np.int64)))
            self.passed.append((np.zeros(0, dtype=np.int64), int(batch.ts_ns.max())))
        return out

    def _put_aside(self, batch: FrameBatch, rows: npt.NDArray[np.int64]) -> None:
        self.deferred.append(_compact(batch, rows))
        # each frame settled here belongs to the gap before the first frame put aside after it
        # (the last gap: after them all); each gap's latest time, -1 for an empty one
        settled = np.ones(len(batch), dtype=np.bool_)
        settled[rows] = False
        where = np.flatnonzero(settled)
        latest = np.full(len(rows) + 1, -1, dtype=np.int64)
        np.maximum.at(latest, np.searchsorted(rows, where), batch.ts_ns[where].astype(np.int64))
        self.passed.append((latest[:-1], int(latest[-1])))

    def _slow(
        self, batch: FrameBatch, rows: npt.NDArray[np.int64], gaps: npt.NDArray[np.int64] | None = None
    ) -> pl.DataFrame:
        self.counters["slow_frames"] += len(rows)
        self._put_aside(batch, rows)
        return pl.DataFrame(schema=MESSAGES)

    def _stateful(
        self, batch: FrameBatch, l4: L4Columns, rows: npt.NDArray[np.int64]
    ) -> tuple[list[Payload], None, None]:
        self._count_stateful(l4, rows)
        self._put_aside(batch, rows)
        return [], None, None


def read_piece(task: Task) -> Piece:
    """Run ``task``; a problem with the file is returned as ``error``, never raised."""
    dissector = _FastOnly(task)
    frames: list[pl.DataFrame] = []
    info: CaptureInfo | None = None
    error = ""
    try:
        with open_capture(task.path, task.file_id, span=task.span) as capture:
            info = capture.info
            for batch in capture.batches(task.batch_frames):
                frame = dissector.dissect(batch)
                if frame.height:
                    frames.append(frame)
    except PcapdnsError as exc:
        error = exc.message
    except Exception as exc:  # a worker reports, the parent decides
        error = f"{task.path}: internal error: {type(exc).__name__}: {exc}"
    return Piece(
        task=task,
        info=info,
        messages=pl.concat(frames) if frames else pl.DataFrame(schema=MESSAGES),
        addresses=dissector.addresses.halves,
        counters=dissector.counters,
        slow=dissector.deferred,
        passed=dissector.passed,
        malformed=dissector.malformed(),
        error=error,
        issues=dissector.take_issues(),
    )


@dataclass(frozen=True, slots=True)
class HostTask:
    """Read and tabulate one host's files (``paths``, file ids ``file_ids`` of the analysis, whose
    files are ``files``) as :func:`pcapdns.pipeline.analyze` does for each host."""

    file_ids: tuple[int, ...]
    files: tuple[str, ...]
    options: Options

    @property
    def paths(self) -> list[str]:
        return [self.files[i] for i in self.file_ids]


@dataclass(slots=True)
class HostResult:
    task: HostTask
    tables: Tables | None
    errors: list[str] = field(default_factory=list)  # one line per file left out


def tabulate_host(task: HostTask) -> HostResult:
    """Run ``task`` where it lands (a local process or a Dask worker): only tables come back."""
    errors: list[str] = []
    try:
        decoded = read(task.paths, task.options, file_ids=task.file_ids, skip=errors.append)
        return HostResult(task, tabulate(decoded, task.options, task.files), errors)
    except Exception as exc:  # a worker reports, the parent decides
        errors.append(f"{', '.join(task.paths)}: internal error: {type(exc).__name__}: {exc}")
        return HostResult(task, None, errors)
