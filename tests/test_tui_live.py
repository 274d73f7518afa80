"""The live dashboard, driven by the real Runner and Stream over samples/outage.pcap replayed as a
capture: a fake Source hands out the file's batches and moves a simulated clock with them (the
runner's clock is ``pcapdns.live.runner.time``), so ten minutes of outage pass in about a second."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from tuihelp import run_async

from pcapdns.live.runner import Runner, Tick
from pcapdns.model import FrameBatch
from pcapdns.sources import open_capture
from pcapdns.stream import Stream, StreamOptions
from pcapdns.tui.chart import Chart
from pcapdns.tui.live import LiveApp, counts_line, names_table, servers_table
from pcapdns.tui.livedata import LiveModel, Snapshot

ROOT = Path(__file__).resolve().parents[1]
OUTAGE = ROOT / "samples" / "outage.pcap"
EXPECTED = json.loads((ROOT / "samples" / "expected" / "outage.json").read_text())
INTERVAL_S = 10.0


class Replay:
    """A Source over a capture file: each read hands out the next batch of the file.

    With a runner attached (``self.runner``), the replay moves in lockstep with the runner's
    analysis thread, so that every run is the same run whatever the machine's load: the next batch
    is handed out only once the analysis has taken every frame handed out so far and has read the
    clock twice since (it has ticked if it was due, and is waiting for more); the simulated clock is
    the newest time of what the analysis has taken. Once the file is over, each such wait moves the
    clock 5 simulated seconds on, as a quiet capture's does. Without a runner, reads just hand out
    the batches, ``pace_s`` apart.
    """

    name = "outage"

    def __init__(
        self,
        path: Path,
        batch: int = 200,
        pace_s: float = 0.004,
        kernel_drops_after: int = 15,
        hold_after: int | None = None,
    ) -> None:
        with open_capture(str(path)) as cap:
            self.batches: Iterator[FrameBatch] = iter(list(cap.batches(batch)))
        self.now_ns = 0
        self.pace_s = pace_s
        self.reads = 0
        self.kernel_drops_after = kernel_drops_after
        self.cond = threading.Condition()
        self.runner: Runner | None = None  # when set, the replay moves in lockstep with it
        self.handed = 0  # frames handed out
        self.ends: list[tuple[int, int]] = []  # (frames handed out, newest time) per batch not yet taken
        self.idle_reads = 0  # clock reads by the analysis since it took everything handed out
        self.hold_after = hold_after  # batches handed out before the capture goes quiet until stopped

    def start_at(self, ns: int) -> None:
        self.now_ns = ns

    def read(self, timeout_s: float) -> FrameBatch | None:
        time.sleep(self.pace_s)  # wall-clock pace only: what happens does not depend on it
        runner = self.runner
        if runner is None:
            batch = next(self.batches, None)
            self.reads += batch is not None
            return batch
        with self.cond:
            held = self.hold_after is not None and self.reads >= self.hold_after
            if not self.cond.wait_for(
                lambda: (self.idle_reads >= 2 and not held) or runner._stop.is_set(), timeout_s
            ):
                return None  # the runner's capture loop asks again
            if runner._stop.is_set():
                return None
            self.idle_reads = 0
            batch = next(self.batches, None)
            if batch is None:
                self.now_ns += 5_000_000_000
                return None
            self.reads += 1
            self.handed += len(batch)
            self.ends.append((self.handed, int(batch.ts_ns.max())))
            return batch

    def kernel_drops(self) -> int:
        return 7 if self.reads >= self.kernel_drops_after else 0

    def time_ns(self) -> int:
        """The runner's clock (read by its analysis thread only)."""
        with self.cond:
            runner = self.runner
            if runner is not None:
                taken = runner._seen
                while self.ends and self.ends[0][0] <= taken:
                    self.now_ns = max(self.now_ns, self.ends.pop(0)[1])
                if taken >= self.handed:
                    self.idle_reads += 1
                    self.cond.notify_all()
            return self.now_ns

    def close(self) -> None:
        pass


def _clocked(monkeypatch: pytest.MonkeyPatch, source: Replay) -> None:
    # The runner's clock is the replay's, and its cost clock moves one step a read: the anomaly
    # engine (run unless it costs more than a fifth of the time) then runs at the same ticks, every
    # fourth, on every run whatever the machine's load.
    steps = itertools.count(0, 1_000_000)
    fake = SimpleNamespace(time_ns=source.time_ns, monotonic_ns=lambda: next(steps))
    monkeypatch.setattr("pcapdns.live.runner.time", fake)


def _app(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[LiveApp, Replay, list[Snapshot]]:
    source = Replay(OUTAGE, **kw)
    source.start_at(1_709_287_200_000_000_000)  # 2024-03-01T10:00:00Z, the capture's nominal start
    _clocked(monkeypatch, source)
    stream = Stream(StreamOptions(), name="outage")
    seen: list[Snapshot] = []

    def make_runner(on_tick: Any) -> Runner:
        source.runner = Runner(source, stream, on_tick, interval_s=INTERVAL_S, duration_s=660)
        return source.runner

    app = LiveApp(make_runner, "outage", INTERVAL_S)
    app.notified = []  # type: ignore[attr-defined]  # (title, severity) of every notification
    notify = app.notify

    def recording_notify(message: str, **kw: Any) -> None:
        app.notified.append((kw.get("title"), kw.get("severity")))  # type: ignore[attr-defined]
        notify(message, **kw)

    app.notify = recording_notify  # type: ignore[method-assign]
    add = app.model.add

    def recording(tick: Tick) -> Snapshot:
        snap = add(tick)
        seen.append(snap)
        return snap

    app.model.add = recording  # type: ignore[method-assign]
    return app, source, seen


async def _until(pilot: Any, done: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the dashboard did not get there")
        await pilot.pause(0.05)


def _style_after(line: Text, label: str) -> str:
    """The style of the figure that follows ``label`` in a counts line."""
    at = line.plain.index(label) + len(label)
    return next(str(s.style) for s in line.spans if s.start == at)


def _plain(renderable: Any, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@run_async
async def test_the_dashboard_shows_the_outage_as_it_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    app, source, seen = _app(monkeypatch)
    async with app.run_test(size=(120, 44)) as pilot:
        await _until(pilot, lambda: app.final is not None and app.snapshot is not None and app.snapshot.final)
        await pilot.pause(0.1)
        snap = app.snapshot
        assert snap is not None
        # the totals are the file analysis' figures
        assert (snap.frames, snap.dns_messages, snap.queries) == (5930, 5930, EXPECTED["queries"])
        assert (snap.answered, snap.unanswered) == (EXPECTED["answered"], EXPECTED["unanswered"])
        # the rate chart carries every response and every unanswered query, interval by interval
        assert round(sum(p.rates[2] * p.seconds for p in snap.points)) == EXPECTED["rcodes"]["SERVFAIL"]
        assert round(sum(p.rates[1] * p.seconds for p in snap.points)) == EXPECTED["rcodes"]["NXDOMAIN"]
        assert round(sum(p.rates[4] * p.seconds for p in snap.points)) == EXPECTED["unanswered"]
        rising = [sum(p.rates[2] for p in s.points) for s in seen]
        assert rising == sorted(rising) and rising[0] == 0 and rising[-1] > 0  # SERVFAIL counts rise
        first_sf = next(p.bucket for p in snap.points if p.rates[2] > 0) * INTERVAL_S
        assert 1_709_287_440 <= first_sf <= 1_709_287_480  # 10:04:00 + 1.5..3 s, give or take a batch
        chart = app.query_one("#rates", Chart)
        assert chart.data is not None and any(c for c in chart.data.columns)
        # latency percentiles over time: the outage's SERVFAILs take 1.5-3 s
        assert max(p.latency[2] for p in snap.points if p.latency) >= 1500
        # drops: the kernel's 7 shown red, the queue's 0 green
        counts = app.query_one("#live-counts").render()
        plain = str(counts)
        assert "packets 5,930" in plain and "DNS messages 5,930" in plain
        assert "kernel 7" in plain and "queue 0" in plain
        line = counts_line(snap)
        assert _style_after(line, "kernel ") == "bold red" and _style_after(line, "queue ") == "green"
        # the findings, with their onset in the outage
        rows = [
            app.query_one("#live-findings").get_row_at(i)
            for i in range(app.query_one("#live-findings").row_count)
        ]
        kinds = {str(r[3]): str(r[1]) for r in rows}
        assert "unanswered_outage" in kinds
        assert kinds["unanswered_outage"].startswith("10:04:0")
        critical = [r for r in rows if str(r[2]) == "critical"]
        assert critical and all(r[0].style == "bold white on #5f0000" for r in critical)
        assert ("critical finding", "error") in app.notified  # type: ignore[attr-defined]
    assert app.final is not None and app.final.final


def test_the_tables_show_the_failing_names_and_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Replay(OUTAGE, pace_s=0)
    source.start_at(1_709_287_200_000_000_000)
    _clocked(monkeypatch, source)
    model = LiveModel("outage", INTERVAL_S, window_s=3600)
    snaps: list[Snapshot] = []
    source.runner = runner = Runner(source, Stream(StreamOptions()), lambda t: snaps.append(model.add(t)),
                                    interval_s=INTERVAL_S, duration_s=660)  # fmt: skip
    runner.run()
    snap = snaps[-1]
    rcodes = [r for r, _ in snap.failing]
    assert rcodes[:2] == ["SERVFAIL", "NXDOMAIN"]
    servfail = dict(snap.failing)["SERVFAIL"]
    assert all(name.endswith("shop.example") for name, _ in servfail)
    names = _plain(names_table(snap))
    assert "SERVFAIL" in names and "shop.example" in names
    top = {row.server: row for row in snap.servers}
    for server in EXPECTED["scenario"]["outage"]["servers"]:  # the outage's authorities, unanswered
        assert top[server].unanswered > 0 and top[server].rate > 0.3
    assert snap.servers[0].server in EXPECTED["scenario"]["outage"]["servers"]
    assert "192.0.2.1" in _plain(servers_table(snap))
    assert "kernel 7" in str(counts_line(snap))


def test_memory_stays_bounded_over_a_long_run() -> None:
    """Hours of ticks: the history and rolling tables keep their caps."""
    source = Replay(OUTAGE, batch=500, pace_s=0)
    stream = Stream(StreamOptions())
    ticks = []
    t = 0
    for b in source.batches:
        stream.feed(b)
        step = stream.settle()
        q, r = stream.take_interval()
        ticks.append(
            Tick(
                stream.summary(),
                0,
                0,
                t,
                t + 1,
                q,
                r,
                step.unanswered,
                step.transactions,
                stream.detect_new(),
            )
        )
        t += 1
    model = LiveModel("x", 1.0, points=100, window_s=30)
    for i in range(400):
        tick = ticks[i % len(ticks)]
        tick.start_ns, tick.end_ns = i * 1_000_000_000, (i + 1) * 1_000_000_000
        model._rcodes = {}
        model.add(tick)
    assert len(model.points) == 100
    assert len(model.servers) <= 31 and len(model.names) <= 31
    assert all(df.height <= model.per_tick_rows for _, df in model.names)


@run_async
async def test_quitting_stops_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    # the capture goes quiet after 10 of the file's 30 batches: only q can end the run
    app, source, seen = _app(monkeypatch, pace_s=0, hold_after=10)
    async with app.run_test(size=(100, 40)) as pilot:
        await _until(pilot, lambda: len(seen) >= 2)
        await pilot.press("q")
        await _until(pilot, lambda: app.final is not None)
    assert app.final is not None and app.final.final
    assert 0 < app.final.summary["frames"] <= 2000  # stopped where the capture stood, not at the file's end


@run_async
async def test_the_findings_table_keeps_the_newest_on_top_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pcapdns.tui import live

    monkeypatch.setattr(live, "MAX_FINDINGS", 3)
    app, source, seen = _app(monkeypatch)
    async with app.run_test(size=(120, 44)) as pilot:
        await _until(pilot, lambda: app.final is not None and app.snapshot is not None and app.snapshot.final)
        await pilot.pause(0.1)
        table = app.query_one("#live-findings")
        assert app.findings_seen > 3 and table.row_count == 3
        numbers = [int(str(table.get_row_at(i)[0])) for i in range(3)]
        assert numbers == [app.findings_seen, app.findings_seen - 1, app.findings_seen - 2]
        assert f"{app.findings_seen} detected (the latest 3 shown)" in str(
            app.query_one("#live-findings-title").render()
        )


def _stepped_ticks(batch: int = 250) -> list[Tick]:
    """The outage streamed batch by batch, one tick per batch (deterministic, unlike a threaded run)."""
    stream = Stream(StreamOptions(), name="outage")
    ticks: list[Tick] = []
    start = 1_709_287_200_000_000_000
    with open_capture(str(OUTAGE)) as cap:
        for i, b in enumerate(cap.batches(batch)):
            stream.feed(b)
            end = int(b.ts_ns.max())
            step = stream.settle(end)
            q, r = stream.take_interval()
            drops = 7 if i >= 15 else 0
            findings = stream.detect_new()
            ticks.append(
                Tick(
                    stream.summary(), drops, 0, start, end, q, r, step.unanswered, step.transactions, findings
                )
            )
            start = end
    return ticks


class TickReplay:
    """A runner handing over ready ticks, then running on (as a quiet capture does) until stopped."""

    def __init__(self, ticks: list[Tick], on_tick: Any) -> None:
        self.ticks, self.on_tick = ticks, on_tick
        self.stopped = threading.Event()

    def run(self) -> Tick:
        for t in self.ticks:
            self.on_tick(t)
        self.stopped.wait(30)
        return self.ticks[-1]

    def stop(self) -> None:
        self.stopped.set()


def test_dashboard_snapshot(snap_compare: Any) -> None:
    ticks = _stepped_ticks()
    app = LiveApp(lambda on_tick: TickReplay(ticks, on_tick), "eth0", INTERVAL_S)

    async def run_before(pilot: Any) -> None:
        await _until(pilot, lambda: app.snapshot is not None and app.snapshot.end_ns == ticks[-1].end_ns)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 44), run_before=run_before)
    assert app.final is not None  # quitting after the snapshot stopped the runner


def test_a_capture_error_ends_the_dashboard_and_reaches_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture thread's error stops the runner; run_dashboard raises it once the screen is back."""
    from pcapdns.errors import SourcePermission
    from pcapdns.tui import live

    class Failing(Replay):
        def read(self, timeout_s: float) -> FrameBatch | None:
            if self.reads >= 3:
                raise SourcePermission("lo: the interface went away")
            return super().read(timeout_s)

    source = Failing(OUTAGE, pace_s=0)
    source.start_at(1_709_287_200_000_000_000)
    _clocked(monkeypatch, source)

    def make_runner(on_tick: Any) -> Runner:
        return Runner(source, Stream(StreamOptions()), on_tick, interval_s=INTERVAL_S)

    def headless(self: LiveApp) -> None:
        async def drive() -> None:
            async with self.run_test(size=(100, 40)) as pilot:
                await _until(pilot, lambda: self.error is not None)

        import asyncio

        asyncio.run(drive())

    monkeypatch.setattr(live.LiveApp, "run", headless)
    with pytest.raises(SourcePermission, match="went away"):
        live.run_dashboard(make_runner, "lo", INTERVAL_S)


def test_rate_axis_labels_fit_the_axis() -> None:
    from pcapdns.tui.chart import AXIS
    from pcapdns.tui.live import _short

    assert [_short(v) for v in (0.5, 25, 2500, 100_000, 1_250_000)] == ["0.5", "25", "2.5k", "100k", "1.25M"]
    assert all(len(_short(v) + "/s") <= AXIS - 1 for v in (0.25, 999, 1e5, 2.5e6, 1e8))
