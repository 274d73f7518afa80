"""What the live stream keeps of the recent past, bounded: the rolling window of settled rows the
anomaly engine runs over, and a ring of recent raw frames to fetch evidence back by number."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

import numpy as np
import polars as pl

from pcapdns.model import FrameBatch
from pcapdns.schema import DECODE_ISSUES, ISSUE_COUNTS, MALFORMED


class RollingFrames:
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
        """All rows kept, in order; None before the first frame of a table without a schema."""
        if not self.parts:
            return self.empty
        return pl.concat([df for _, df in self.parts], how="vertical_relaxed")


class Window:
    """The recent settled transactions, unpaired responses, malformations and decode issues."""

    def __init__(self, seconds: float, rows: int) -> None:
        self.span_ns = int(seconds * 1e9)
        self.max_rows = rows
        self.transactions = RollingFrames()
        self.unpaired = RollingFrames()
        self.malformed = RollingFrames(MALFORMED)
        self.issues = RollingFrames(DECODE_ISSUES)  # the first examples of each reason, per step
        self.issue_counts = RollingFrames(ISSUE_COUNTS)  # all of them, counted per step

    def trim(self, now_ns: int) -> None:
        for frames in (self.transactions, self.unpaired, self.malformed, self.issues, self.issue_counts):
            frames.trim(now_ns - self.span_ns, self.max_rows)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in (self.transactions, self.unpaired, self.malformed, self.issues))


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
