"""The live dashboard of ``pcapdns live``: one screen redrawn every interval from the runner's ticks.

The :class:`~pcapdns.live.runner.Runner` blocks, so it runs in a thread worker; its ``on_tick`` callback
(in that thread) feeds the other sinks (metrics, evidence), folds the tick into a
:class:`~pcapdns.tui.livedata.LiveModel` and posts the resulting immutable snapshot to the app.
Quitting (``q``, ``ctrl+c``, SIGTERM through the CLI) stops the runner; the worker then returns its
final tick, the app exits, and the CLI prints the final summary.  Packet-derived text is drawn
through :mod:`pcapdns.tui.safe` as rich ``Text`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from pcapdns.live.runner import Tick
from pcapdns.tui.chart import AXIS, Chart, ChartData, Series
from pcapdns.tui.livedata import FAILING, RATE_SERIES, LiveModel, Snapshot
from pcapdns.tui.overview import (
    LATENCY_SERIES,
    OUTCOME_COLORS,
    SEVERITY_COLORS,
    _log_height,
    _nice_ceiling,
    _table,
    legend,
)
from pcapdns.tui.safe import text

RATES = tuple(Series(n, OUTCOME_COLORS[n]) for n in RATE_SERIES)
CRITICAL_ROW = "bold white on #5f0000"
MAX_FINDINGS = 200  # rows kept in the findings table

CSS = """
Screen { background: $surface; }
#live-head { height: 1; background: $panel; padding: 0 1; }
#live-counts { height: auto; margin-bottom: 1; }
#live-body { padding: 0 1; height: 1fr; }
#rates { height: 8; margin-bottom: 1; }
#live-latency { height: 5; margin-bottom: 1; }
#live-tables { height: auto; max-height: 10; }
#live-servers { width: 1fr; margin-right: 2; }
#live-names { width: 1fr; }
#live-findings-title { height: 1; margin-top: 1; }
#live-findings { height: 1fr; min-height: 4; }
"""


class Runs(Protocol):
    """What the dashboard needs of its runner (:class:`pcapdns.live.runner.Runner` is one)."""

    def run(self) -> Tick: ...

    def stop(self) -> None: ...


MakeRunner = Callable[[Callable[[Tick], None]], Runs]


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _onset(iso: str | None) -> str:
    """``HH:MM:SS.mmm`` of an ISO time (the date is in the head line's clock)."""
    return "-" if not iso else iso.partition("T")[2].rstrip("Z")[:12]


def _columns(snap: Snapshot, buckets: int) -> tuple[list[Any], int]:
    """The last ``buckets`` intervals ending at the newest one (missing intervals are gaps)."""
    last = snap.points[-1].bucket if snap.points else snap.end_ns // snap.interval_ns
    first = last - buckets + 1
    by_bucket = {p.bucket: p for p in snap.points if p.bucket >= first}
    return [by_bucket.get(b) for b in range(first, last + 1)], first


def _short(v: float) -> str:
    """A y-axis figure in at most 5 characters: 250, 2.5k, 100k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def rates_chart(snap: Snapshot, buckets: int) -> ChartData:
    points, first = _columns(snap, buckets)
    top = _nice_ceiling(max((sum(p.rates) for p in points if p), default=0.0))
    columns: list[list[float] | None] = []
    for p in points:
        if p is None:
            columns.append(None)
            continue
        acc, col = 0.0, []
        for v in p.rates:
            acc += v
            col.append(acc / top)
        columns.append(col)
    labels = [(1.0, _short(top) + "/s"), (0.5, _short(top / 2)), (0.0, "0")]
    bucket_us = snap.interval_ns // 1000
    return ChartData(RATES, columns, labels, first * bucket_us, bucket_us)


def latency_chart(snap: Snapshot, buckets: int) -> ChartData:
    points, first = _columns(snap, buckets)
    columns = [
        None if p is None or p.latency is None else [_log_height(v) for v in p.latency] for p in points
    ]
    labels = [(_log_height(v), label) for v, label in ((10_000, "10s"), (100, "100ms"), (1, "1ms"))]
    bucket_us = snap.interval_ns // 1000
    return ChartData(LATENCY_SERIES, columns, labels, first * bucket_us, bucket_us)


def counts_line(snap: Snapshot) -> Text:
    """Packets seen, DNS messages decoded, malformed, and both drop counters (red when non-zero)."""
    out = Text()

    def item(label: str, n: int, style: str = "") -> None:
        out.append(f"{label} ", style="dim")
        out.append(f"{n:,}", style=style or "bold")
        out.append("   ")

    item("packets", snap.frames)
    item("DNS messages", snap.dns_messages)
    out.append("dropped: ", style="dim")
    item("kernel", snap.kernel_drops, "bold red" if snap.kernel_drops else "green")
    item("queue", snap.queue_drops, "bold red" if snap.queue_drops else "green")
    item("malformed", snap.malformed, "yellow" if snap.malformed else "")
    item("queries", snap.queries)
    item("unanswered", snap.unanswered, "magenta" if snap.unanswered else "")
    if snap.queued:
        item("backlog", snap.queued, "yellow" if snap.queued > 8 else "dim")
    out.rstrip()
    return out


def head_line(snap: Snapshot | None, interface: str, stopping: bool) -> Text:
    out = Text("pcapdns live", style="bold")
    out.append(" on ")
    out.append(text(interface, "bold"))
    if snap is None:
        out.append("   waiting for the first interval…", style="italic")
        return out
    up = max(0, (snap.end_ns - snap.started_ns) // 1_000_000_000)
    out.append(f"   {_clock(snap.end_ns)} UTC   up {up // 3600}:{up // 60 % 60:02}:{up % 60:02}")
    lat = snap.latency_ms
    if lat["p50"] is not None:
        out.append("   latency ")
        out.append(" ".join(f"{k} {lat[k]:,.1f}" for k in ("p50", "p95", "p99") if lat[k] is not None))
        out.append(" ms")
    if stopping or snap.final:
        out.append("   stopping…" if not snap.final else "   stopped", style="bold yellow")
    return out


def servers_table(snap: Snapshot) -> Table:
    t = _table("Unanswered by server (last 5 min)")
    t.add_column("server", no_wrap=True, overflow="ellipsis", ratio=1)
    t.add_column("queries", justify="right")
    t.add_column("unanswered", justify="right")
    t.add_column("rate", justify="right")
    for row in snap.servers:
        style = "red" if row.rate >= 0.1 else "yellow" if row.rate >= 0.01 else ""
        t.add_row(
            text(row.server), f"{row.queries:,}", f"{row.unanswered:,}", Text(f"{100 * row.rate:.1f}%", style)
        )
    if not snap.servers:
        t.add_row(Text("nothing settled yet", style="dim"), "", "", "")
    return t


def names_table(snap: Snapshot, rows: int = 8) -> Table:
    t = _table("Top names per failing RCODE (last 5 min)")
    t.add_column("rcode", no_wrap=True)
    t.add_column("name", no_wrap=True, overflow="ellipsis", ratio=1)
    t.add_column("count", justify="right")
    shown = 0
    for rcode, names in snap.failing:
        color = OUTCOME_COLORS.get(rcode, OUTCOME_COLORS["other"] if rcode not in FAILING else "")
        for i, (name, n) in enumerate(names[:3]):
            if shown >= rows:
                return t
            t.add_row(text(rcode if i == 0 else "", color), text(name), f"{n:,}")
            shown += 1
    if not snap.failing:
        t.add_row("", Text("no failing responses", style="dim"), "")
    return t


class RollingChart(Chart, can_focus=False):
    """The overview's chart without its cursor: here the columns roll by."""


class LiveApp(App[None]):
    """The dashboard; :meth:`run` returns when the runner has stopped (``final`` holds its last tick)."""

    TITLE = "pcapdns live"
    CSS = CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "stop", "quit"),
        Binding("ctrl+c", "stop", "quit", show=False, priority=True),
        Binding("p", "pause", "pause display"),
        Binding("f", "focus('live-findings')", "findings"),
    ]

    class Update(Message):
        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    def __init__(
        self,
        make_runner: MakeRunner,
        interface: str,
        interval_s: float,
        sinks: Sequence[Callable[[Tick], None]] = (),
    ) -> None:
        super().__init__()
        self.make_runner = make_runner
        self.interface = interface
        self.model = LiveModel(interface, interval_s)
        self.sinks = list(sinks)
        self.runner: Runs | None = None
        self.final: Tick | None = None
        self.error: BaseException | None = None
        self.snapshot: Snapshot | None = None
        self.paused = False
        self.stopping = False
        self.closing = False
        self.findings_seen = 0
        self.oldest_finding = 0  # the sequence number of the last row removed

    def compose(self) -> ComposeResult:
        yield Static(head_line(None, self.interface, False), id="live-head")
        with Vertical(id="live-body"):
            yield Static(Text(""), id="live-counts")
            yield Static(legend(RATES, "Responses per second by RCODE"))
            yield RollingChart(id="rates")
            yield Static(legend(LATENCY_SERIES, "Latency of settled transactions (log scale)"))
            yield RollingChart(id="live-latency")
            with Horizontal(id="live-tables"):
                yield Static(id="live-servers")
                yield Static(id="live-names")
            yield Static(Text("Findings  none yet", style="bold"), id="live-findings-title")
            yield DataTable(id="live-findings", cursor_type="row", zebra_stripes=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#live-findings", DataTable)
        for label, width in (
            ("#", 4),
            ("onset (UTC)", 12),
            ("severity", 8),
            ("kind", 17),
            ("servers", 15),
            ("summary", 200),
        ):
            table.add_column(label, width=width, key=label)
        self.runner = self.make_runner(self._on_tick)
        self.run_worker(self._run, thread=True, name="pcapdns-runner", exit_on_error=False)

    # -- the runner's thread -----------------------------------------------------------------
    def _on_tick(self, tick: Tick) -> None:
        for sink in self.sinks:
            sink(tick)
        self.post_message(self.Update(self.model.add(tick)))

    def _run(self) -> None:
        assert self.runner is not None
        try:
            self.final = self.runner.run()
        except BaseException as exc:  # raised again by the CLI once the screen is restored
            self.error = exc
        if self.closing:  # the app is going already (and stopped us on its way out)
            return
        try:
            self.call_from_thread(self.exit)
        except RuntimeError:  # it went meanwhile
            pass

    def on_unmount(self) -> None:
        self.closing = True
        if self.runner is not None:  # however the app ends, the capture stops with it
            self.runner.stop()

    # -- the UI thread -----------------------------------------------------------------------
    def on_live_app_update(self, message: Update) -> None:
        snap = message.snapshot
        self._findings(snap)
        if self.paused and not snap.final:
            return
        self.show(snap)

    def show(self, snap: Snapshot) -> None:
        self.snapshot = snap
        buckets = max(10, self.query_one("#rates", Chart).size.width - AXIS)
        self.query_one("#live-head", Static).update(head_line(snap, self.interface, self.stopping))
        self.query_one("#live-counts", Static).update(counts_line(snap))
        self.query_one("#rates", Chart).set_data(rates_chart(snap, buckets))
        self.query_one("#live-latency", Chart).set_data(latency_chart(snap, buckets))
        self.query_one("#live-servers", Static).update(servers_table(snap))
        self.query_one("#live-names", Static).update(names_table(snap))

    def _findings(self, snap: Snapshot) -> None:
        if not snap.new_findings:
            return
        table = self.query_one("#live-findings", DataTable)
        for f in snap.new_findings:
            critical = f["severity"] == "critical"
            style = CRITICAL_ROW if critical else SEVERITY_COLORS.get(f["severity"], "")
            self.findings_seen += 1
            cells = [
                str(self.findings_seen),
                _onset(f["onset"]),
                f["severity"],
                f["kind"],
                ", ".join(f["servers"]) or "-",
                f["summary"],
            ]
            table.add_row(*(text(c, style) for c in cells), key=str(self.findings_seen))
            if critical:
                self.notify(
                    f"{f['kind']} since {_onset(f['onset'])}: {f['summary']}",
                    title="critical finding",
                    severity="error",
                    timeout=8,
                    markup=False,
                )
        while table.row_count > MAX_FINDINGS:  # the oldest go: the table stays bounded
            self.oldest_finding += 1
            table.remove_row(str(self.oldest_finding))
        table.sort("#", key=lambda cell: int(cell.plain), reverse=True)  # the newest on top
        title = Text("Findings  ", style="bold")
        title.append(f"{self.findings_seen:,} detected", style="")
        if self.findings_seen > table.row_count:
            title.append(f" (the latest {table.row_count} shown)", style="dim")
        self.query_one("#live-findings-title", Static).update(title)

    def action_stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.stopping = True
        if self.snapshot is not None:
            self.query_one("#live-head", Static).update(head_line(self.snapshot, self.interface, True))

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.notify("display paused (capture goes on)" if self.paused else "display resumed", timeout=2)
        if not self.paused and self.snapshot is not None:
            self.show(self.snapshot)


def run_dashboard(
    make_runner: MakeRunner,
    interface: str,
    interval_s: float,
    sinks: Sequence[Callable[[Tick], None]] = (),
) -> Tick:
    """Run the dashboard until the runner stops; its final tick (the runner's error is raised)."""
    app = LiveApp(make_runner, interface, interval_s, sinks)
    app.run()
    if app.error is not None:
        raise app.error
    if app.final is None:  # the app ended without its worker (it cannot, short of a crash)
        assert app.runner is not None
        app.runner.stop()
        deadline = time.monotonic() + 5
        while app.final is None and time.monotonic() < deadline:
            time.sleep(0.05)
    if app.final is None:
        raise RuntimeError("the capture did not stop")
    return app.final


class _Replay:
    """A runner that hands over one tick (for :func:`warm_up`)."""

    def __init__(self, tick: Tick, on_tick: Callable[[Tick], None]) -> None:
        self.tick, self.on_tick = tick, on_tick

    def run(self) -> Tick:
        self.on_tick(self.tick)
        return self.tick

    def stop(self) -> None:
        pass


def warm_up(tick: Tick) -> None:
    """Draw the dashboard once, headless, on ``tick``: every module it needs gets loaded while the
    interpreter's files are still readable (before root is given up)."""
    import asyncio

    import textual.drivers.linux_driver  # noqa: F401 - the driver of the real run

    async def once() -> None:
        app = LiveApp(lambda on_tick: _Replay(tick, on_tick), "warm-up", 1.0)
        async with app.run_test(headless=True, size=(100, 40)) as pilot:
            await pilot.pause()
            app.notify("warm-up", severity="error", markup=False)
            await pilot.pause()

    asyncio.run(once())
