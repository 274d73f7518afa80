"""Plan, run and merge: the parallel entry point (``--workers N``, ``--scheduler tcp://...``).

* **Plan**: captures are grouped by host (:mod:`pcapdns.parallel.hosts`) and ordered by host, then
  by their first timestamp, so rotated files follow each other; a file that cannot be opened is
  reported in one line and left out, the others are analyzed.
* **Run**: with several hosts, each host is one task for
  :func:`pcapdns.parallel.worker.tabulate_host` (only its tables come back); with one host, every
  file (or span of a large uncompressed file, :mod:`pcapdns.parallel.split`) is one task for
  :func:`pcapdns.parallel.worker.read_piece`.  Tasks run on local processes, this one among them
  (:func:`_run_local`), or on a Dask cluster.
* **Merge**: address ids are re-interned into one table, the frames the fast path left are decoded
  in capture order by one slow-path dissector, and each file's pieces are put back in frame order.
  What comes out is what :func:`pcapdns.pipeline.analyze` reads in one process, and the same
  :func:`pcapdns.pipeline.assemble` pairs it (per host), tabulates it and looks for anomalies.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar, cast

import numpy as np
import polars as pl

from pcapdns.dissect import Dissector, interleave
from pcapdns.errors import PcapdnsError
from pcapdns.model import CaptureInfo, IssueLog
from pcapdns.parallel.hosts import host_of
from pcapdns.parallel.local import start_local_workers
from pcapdns.parallel.shm import exchange, take, through
from pcapdns.parallel.split import split
from pcapdns.parallel.worker import HostResult, HostTask, Piece, Task, read_piece, tabulate_host
from pcapdns.pipeline import Decoded, Options, Progress, Tables, assemble, empty_tables, finish, host_groups
from pcapdns.pipeline import analyze as analyze_here
from pcapdns.schema import MESSAGES
from pcapdns.sources import Span, open_capture
from pcapdns.tables.summary import Analysis

Warn = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")
SPANS_PER_WORKER = 4  # more pieces than workers: the last ones finish together
MIN_SPAN = 4 << 20
PEEK_BYTES = 4096  # what planning reads of each file (a bigger first record widens it)


@dataclass(frozen=True, slots=True)
class Engine:
    """Where an analysis runs: ``workers`` local processes, or the Dask cluster at ``scheduler``;
    ``group_by`` names each capture's host (see :func:`plan`)."""

    workers: int = 1
    scheduler: str | None = None
    group_by: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The captures to analyze, in order, with the host of each; and the files left out."""

    paths: tuple[str, ...]
    hosts: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # one line per file that could not be opened


def _first_ts(path: str) -> int | None:
    """The first record's timestamp: one small window is walked (in this process, uncompiled),
    so that planning a fleet of files costs a fraction of a millisecond per file."""
    with open_capture(path, chunk_size=PEEK_BYTES) as capture:
        for batch in capture.batches(1):
            if len(batch):
                return int(batch.ts_ns[0])
    return None


def plan(paths: Sequence[str], group_by: str | None = None) -> Plan:
    """Group ``paths`` by host and order them by host and first timestamp.

    A single input (or stdin) is kept as it is: errors opening it are raised later, as always.
    """
    pattern = re.compile(group_by) if group_by else None
    if len(paths) <= 1 or "-" in paths:
        return Plan(tuple(paths), tuple(host_of(p, pattern) for p in paths))
    found: list[tuple[str, bool, int, int, str]] = []
    skipped: list[str] = []
    first_error: PcapdnsError | None = None
    for i, path in enumerate(paths):
        try:
            ts = _first_ts(path)
        except PcapdnsError as exc:
            skipped.append(exc.message)
            first_error = first_error or exc
            continue
        found.append((host_of(path, pattern), ts is None, ts or 0, i, path))
    if not found and first_error is not None:
        raise first_error
    found.sort()
    return Plan(tuple(f[4] for f in found), tuple(f[0] for f in found), tuple(skipped))


def analyze(
    paths: Sequence[str],
    options: Options | None = None,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    group_by: str | None = None,
    progress: Progress | None = None,
    stage: Callable[[str], None] | None = None,
    warn: Warn | None = None,
    span_bytes: int | None = None,
) -> Analysis:
    """Analyze ``paths`` as :func:`pcapdns.pipeline.analyze` does, on ``workers`` local processes
    or on the Dask cluster whose scheduler is at ``scheduler``; the result is the same.

    Files are grouped by host (``group_by``: a regex whose first group names it) and ordered by
    first timestamp; queries pair only with responses of the same host.  ``warn`` gets one line
    per file left out or piece that failed.  ``span_bytes`` sets how large a span of one file
    a task reads (default: the input divided among the workers, at least 4 MiB).
    """
    opts = options or Options()
    if scheduler is not None:
        from pcapdns.parallel.cluster import require_dask

        require_dask()  # before any file is planned: one line, exit status 2
    if workers > 1 and scheduler is None and "-" not in paths:
        start_local_workers()  # the fork server loads everything while the files are planned
    p = plan(paths, group_by)
    for line in p.skipped:
        if warn is not None:
            warn(line)
    opts = replace(opts, hosts=p.hosts)
    if (workers <= 1 and scheduler is None) or "-" in p.paths:  # stdin is read where it is
        return analyze_here(p.paths, opts, progress, stage)
    groups = host_groups(p.hosts, len(p.paths))
    if len(groups) > 1:  # hosts are independent: one task reads and tabulates a whole host
        host_tasks = [HostTask(tuple(ids), p.paths, opts) for ids in groups]
        if scheduler is not None:
            from pcapdns.parallel.cluster import connect

            with connect(scheduler) as cluster:
                parts = _collect_hosts(cluster.run(tabulate_host, host_tasks), host_tasks, progress, warn)
        else:
            parts = _collect_hosts(_run_local(tabulate_host, host_tasks, workers), host_tasks, progress, warn)
        return finish(parts, opts, stage)
    if scheduler is not None:
        from pcapdns.parallel.cluster import connect

        with connect(scheduler) as cluster:
            tasks = _tasks(p.paths, opts, cluster.workers, span_bytes)
            pieces = _collect(cluster.run(read_piece, tasks), tasks, progress, warn)
    else:
        tasks = _tasks(p.paths, opts, workers, span_bytes)
        if len(tasks) == 1:  # one small file: starting processes would cost more than it saves
            return analyze_here(p.paths, opts, progress, stage)
        pieces = _collect(_run_local(read_piece, tasks, workers), tasks, progress, warn)
    return assemble(merge(pieces, p.paths, opts), opts, stage)


def _tasks(paths: Sequence[str], opts: Options, workers: int, span_bytes: int | None) -> list[Task]:
    sizes = [os.path.getsize(p) if os.path.isfile(p) else 0 for p in paths]
    target = span_bytes or max(MIN_SPAN, sum(sizes) // max(1, workers * SPANS_PER_WORKER))
    tasks: list[Task] = []
    for file_id, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        spans: list[Span | None] = [None]
        if size > target:
            cut = split(path, math.ceil(size / target), min_span=min(target, MIN_SPAN))
            spans = list(cut) if cut else [None]
        for span in spans:
            tasks.append(
                Task(
                    file_id,
                    path,
                    span,
                    opts.ports,
                    opts.fast,
                    opts.batch_frames,
                    opts.fast_min_frames,
                    opts.vxlan_ports,
                    opts.geneve_ports,
                )
            )
    return tasks


def _run_local(run: Callable[[T], R], tasks: list[T], workers: int) -> Iterator[R | BaseException]:
    """``run`` each of ``tasks`` on ``workers`` local processes: this one, and ``workers - 1``
    forked from a clean server process; results in the order they are done.

    This process would otherwise only wait for the others: it takes tasks from the end of the
    list while the pool takes them from the front, and what it computes needs no transfer.  The
    pool is kept up to two tasks ahead per process (so that it does not wait while this one is
    busy), but never given the last task left: that one is this process' share.
    """
    pending = deque(tasks)
    helpers = min(workers, len(tasks)) - 1
    if helpers <= 0:
        yield from (run(t) for t in tasks)
        return
    context = start_local_workers()
    with (
        exchange() as directory,
        ProcessPoolExecutor(max_workers=helpers, mp_context=context) as pool,
    ):
        call = run if directory is None else partial(through, run, directory)
        running: set[Future[object]] = set()

        def finished(futures: Iterable[Future[object]]) -> Iterator[R | BaseException]:
            for future in futures:
                running.discard(future)
                exc = future.exception()
                if exc is not None:
                    yield exc
                else:
                    yield cast(R, future.result() if directory is None else take(future.result()))

        while pending or running:
            while len(pending) > 1 and len(running) < 2 * helpers:  # the last one is for this process
                running.add(pool.submit(call, pending.popleft()))
            if pending:
                yield run(pending.pop())
                yield from finished([f for f in running if f.done()])
            else:
                yield from finished(as_completed(list(running)))


def _alive(results: Iterable[R | BaseException]) -> Iterator[R]:
    """The results; a worker process that died (not a file's fault) ends the analysis."""
    for result in results:
        if isinstance(result, BaseException):
            raise PcapdnsError(f"a worker failed: {type(result).__name__}: {result}") from result
        yield result


def _collect(
    results: Iterable[Piece | BaseException],
    tasks: list[Task],
    progress: Progress | None,
    warn: Warn | None,
) -> list[Piece]:
    """Gather every piece (in any order), advancing the one progress bar over all files' bytes."""
    done: Counter[int] = Counter()
    sizes = {t.file_id: os.path.getsize(t.path) if os.path.isfile(t.path) else 0 for t in tasks}
    pieces: list[Piece] = []
    for result in _alive(results):
        task = result.task
        if result.error:
            if warn is not None:
                warn(result.error if result.error.startswith(task.path) else f"{task.path}: {result.error}")
            continue
        pieces.append(result)
        done[task.file_id] += task.size or sizes[task.file_id]
        if progress is not None:
            info = CaptureInfo(file_id=task.file_id, path=task.path, size=sizes[task.file_id])
            info.bytes_read = min(done[task.file_id], sizes[task.file_id])
            progress(info)
    return pieces


def _collect_hosts(
    results: Iterable[HostResult | BaseException],
    tasks: list[HostTask],
    progress: Progress | None,
    warn: Warn | None,
) -> list[Tables]:
    """Every host's tables, in the order of ``tasks`` (whatever order they finish in)."""
    done: dict[tuple[int, ...], Tables] = {}
    for result in _alive(results):
        for line in result.errors:
            if warn is not None:
                warn(line)
        task = result.task
        tables = result.tables
        if tables is None:  # already reported: the host's files stay, empty, to keep file ids
            tables = empty_tables(
                [CaptureInfo(i, task.files[i]) for i in task.file_ids], task.options, task.files
            )
        done[task.file_ids] = tables
        if progress is not None:
            for c in tables.captures:
                info = replace(c)
                info.bytes_read = os.path.getsize(c.path) if os.path.isfile(c.path) else c.bytes_read
                progress(info)
    return [done[t.file_ids] for t in tasks]


def _merge_info(parts: list[CaptureInfo]) -> CaptureInfo:
    """One file's :class:`CaptureInfo` from its spans' (in span order)."""
    info = replace(parts[0], linktypes=dict(parts[0].linktypes), issues=parts[0].issues.copy())
    for p in parts[1:]:
        for lt, c in p.linktypes.items():
            info.linktypes[lt] = info.linktypes.get(lt, 0) + c
        info.frames = max(info.frames, p.frames)
        info.snaplen = max(info.snaplen, p.snaplen)
        ts = [t for t in (info.first_ts_ns, p.first_ts_ns) if t is not None]
        info.first_ts_ns = min(ts) if ts else None
        ts = [t for t in (info.last_ts_ns, p.last_ts_ns) if t is not None]
        info.last_ts_ns = max(ts) if ts else None
        if p.interface_drops is not None:
            info.interface_drops = p.interface_drops
        info.issues.extend(p.issues)
    if len(parts) > 1:
        info.bytes_read = info.size
    return info


def merge(pieces: list[Piece], paths: Sequence[str], opts: Options) -> Decoded:
    """What one process reading ``paths`` in order would have read, from the workers' pieces."""
    order = sorted(pieces, key=lambda pc: (pc.task.file_id, pc.task.span.start if pc.task.span else 0))
    slow = Dissector(
        opts.ports, fast=False, vxlan_ports=opts.vxlan_ports, geneve_ports=opts.geneve_ports
    )  # its address table becomes the analysis' one
    table = slow.addresses
    fast_frames: list[pl.DataFrame] = []
    slow_frames: list[pl.DataFrame] = []
    counters: Counter[str] = Counter()
    infos: dict[int, list[CaptureInfo]] = {}
    for pc in order:
        assert pc.info is not None
        infos.setdefault(pc.task.file_id, []).append(pc.info)
        counters.update(pc.counters)
        m = pc.messages
        if m.height:
            remap = np.array([table.intern(hi, lo) for hi, lo in pc.addresses], dtype=np.uint32)
            src, dst = (remap[m.get_column(c).to_numpy()] for c in ("src", "dst"))
            fast_frames.append(m.with_columns(pl.Series("src", src), pl.Series("dst", dst)))
        for batch, (gaps, after) in zip(pc.slow, pc.passed, strict=True):
            frame = slow.dissect_passing(batch, gaps, after)
            if frame.height:
                slow_frames.append(frame)
    tail = slow.finish()
    messages = pl.concat([pl.DataFrame(schema=MESSAGES), *fast_frames])
    if slow_frames:  # both runs are in (file, frame, idx) order already
        messages = interleave(messages, pl.concat(slow_frames))
    if tail.height:
        messages = pl.concat([messages, tail])
    # A file none of whose pieces could be read (already reported) stays, empty, to keep file ids.
    captures = [_merge_info(infos[i]) if i in infos else CaptureInfo(i, p) for i, p in enumerate(paths)]
    issues = IssueLog()
    for c in captures:
        issues.extend(c.issues)
    for pc in order:  # the frames the workers settled in bulk
        issues.extend(pc.issues)
    issues.extend(slow.take_issues())
    counters.update({f"slow_{k}": v for k, v in slow.decoder.counters.items()})
    return Decoded(
        captures=captures,
        messages=messages,
        addresses=table.halves,
        issues=issues,
        malformed=pl.concat([*(pc.malformed for pc in order), slow.malformed()]).sort(
            ["file_id", "frame", "idx"], maintain_order=True
        ),
        counters=counters,
    )
