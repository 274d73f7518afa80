"""The live loop around a capture: a capture thread reads batches into a bounded queue (a full queue
drops the batch and counts it), the calling thread analyses them with a :class:`~pcapdns.stream.Stream`,
settles every ``interval`` and calls back with a :class:`Tick`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from pcapdns.model import FrameBatch
from pcapdns.schema import ANOMALIES
from pcapdns.stream import Stream

BEHIND_BATCHES = 2  # this many batches queued: the analysis is behind the capture
POSTPONE_TICKS = 10  # intervals the anomaly engine waits at most for the analysis to catch up


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
        self._postponed = 0  # intervals the engine has waited for the analysis to catch up
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
        except BaseException as exc:  # handed to the analysis thread, which raises it
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
        # The engine runs every interval unless it costs more than a fifth of the time.  While the
        # analysis is behind (batches wait in the queue), it waits for it to catch up, for at most
        # ``POSTPONE_TICKS`` intervals: counting every frame comes before finding a little sooner.
        behind = self.queue.qsize() >= BEHIND_BATCHES and self._postponed < POSTPONE_TICKS
        if self.anomalies and (final or (time.monotonic_ns() >= self._detect_cost and not behind)):
            t0 = time.monotonic_ns()
            findings = s.detect_new()
            spent = time.monotonic_ns() - t0
            self._detect_cost = t0 + 5 * spent
            self._postponed = 0
        elif self.anomalies and behind:
            self._postponed += 1
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
