"""The live loop's scheduling of the anomaly engine while the analysis is behind the capture."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from pcapdns.live.runner import BEHIND_BATCHES, POSTPONE_TICKS, Runner, Tick
from pcapdns.model import FrameBatch
from pcapdns.sources import open_capture
from pcapdns.stream import Stream, StreamOptions

OUTAGE = Path(__file__).parent.parent / "samples" / "outage.pcap"


class Quiet:
    """A capture that never delivers (the test fills the runner's queue itself)."""

    name = "quiet"

    def read(self, timeout_s: float) -> FrameBatch | None:
        return None

    def kernel_drops(self) -> int:
        return 0


@pytest.mark.parametrize("queued", [BEHIND_BATCHES - 1, BEHIND_BATCHES])
def test_the_engine_waits_while_batches_are_queued(monkeypatch: pytest.MonkeyPatch, queued: int) -> None:
    """One batch queued is not behind: the engine runs at the first tick.  With the analysis
    behind, it waits ``POSTPONE_TICKS`` intervals, then runs, behind or not."""
    # Each reading of the cost clock is a second later: the engine's fifth-of-the-time budget
    # always allows it, so only the backlog decides.
    seconds = itertools.count(0, 1_000_000_000)
    monkeypatch.setattr("pcapdns.live.runner.time", SimpleNamespace(monotonic_ns=lambda: next(seconds)))
    stream = Stream(StreamOptions(), name="outage")
    with open_capture(str(OUTAGE)) as cap:
        batches = list(cap.batches(500))
    for b in batches:
        stream.feed(b)
    stream.settle()
    ticks: list[Tick] = []
    runner = Runner(Quiet(), stream, ticks.append, queue_batches=8)
    for b in batches[:queued]:
        runner.queue.put(b)
    waits = POSTPONE_TICKS if queued >= BEHIND_BATCHES else 0
    for i in range(waits + 1):
        runner._tick(i, i + 1, final=False)
    assert [t.findings.height for t in ticks[:waits]] == [0] * waits
    assert "unanswered_outage" in ticks[waits].findings.get_column("kind").cast(str).to_list()
    assert runner.queue.qsize() == queued  # the ticks took nothing from the queue
