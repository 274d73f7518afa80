"""The pcapdns TUI: :func:`make_app` builds it for the CLI and the tests alike.

The app only displays.  :meth:`PcapdnsApp.analyze` runs :func:`pcapdns.pipeline.analyze` (the
same pipeline as ``pcapdns analyze``) in a thread worker that posts :class:`AnalysisProgress`
while reading and :class:`AnalysisReady` with the finished :class:`Analysis` and overview
figures; the window is usable from the first frame and fills in when they arrive.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, Footer, ProgressBar, Static
from textual.worker import get_current_worker

from pcapdns.errors import PcapdnsError
from pcapdns.parallel import Engine, start_local_workers
from pcapdns.pipeline import Options
from pcapdns.report.export import write_file
from pcapdns.tables.summary import Analysis
from pcapdns.tui.chart import AXIS, Chart
from pcapdns.tui.data import build_overview
from pcapdns.tui.detail import DetailScreen
from pcapdns.tui.findings import FindingsView
from pcapdns.tui.messages import AnalysisFailed, AnalysisProgress, AnalysisReady, OverviewReady
from pcapdns.tui.overview import OverviewView, clock
from pcapdns.tui.packet import preload_scapy
from pcapdns.tui.runner import ISOLATE_BYTES, child, run, total_bytes
from pcapdns.tui.safe import text
from pcapdns.tui.table import FrameTable
from pcapdns.tui.transactions import TransactionsView

__all__ = ["PcapdnsApp", "make_app"]

VIEWS = (("overview", "1 Overview"), ("findings", "2 Findings"), ("transactions", "3 Transactions"))

# At most 74 cells a line: the help box fits an 80-column terminal (border and padding included).
HELP = """\
pcapdns tui: from "something broke" to the packets

  1 / 2 / 3     Overview / Findings / Transactions
  ?             this help       q, ctrl+c  quit       tab  next pane
  e / E / N     export the current view as CSV / Parquet / NDJSON

Overview       left/right move the chart cursor, shift+left/right widen
               it, enter shows the transactions of that time range
Findings       up/down pick a finding, enter its evidence packets,
               t its transactions, s sort (rank, severity, kind, start,
               count)
Transactions   / edit the filter, enter apply it; up/down/pgup/pgdn/
               home/end; enter opens the packet detail of a row
Packet detail  d decoded, s scapy dissection, x hex dump, escape back

Filter language (terms ANDed; = and != take comma alternatives)
  rcode qtype         = !=            SERVFAIL, NXDOMAIN, 2 / AAAA, 28
  qname server client = != ~ !~       ~ contains (case-insensitive)
  status              = !=            answered, unanswered, timeout,
                                      capture_ended
  transport           = !=            udp, tcp
  latency             = != < <= > >=  200ms, 1.5s, 300us (bare: ms)
  frame id            = != < <= > >=  frame numbers, DNS ID
  ede                 = !=            Extended DNS Error codes, e.g. 22
  time                < <= > >=       10:04, 10:04:30.5,
                                      2024-03-01T10:04:00
  a bare word         qname contains it
"""
HELP_WIDTH = 74


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as box:
            box.border_title = "help"
            box.border_subtitle = "escape or ? closes"
            yield Static(Text(HELP))


class PcapdnsApp(App[None]):
    """Overview, findings and transactions of one analysis; packet detail as a pushed screen."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "pcapdns"
    BINDINGS = [
        # the views' keys are on the top bar (1 Overview 2 Findings 3 Transactions): not in the footer
        Binding("1", "view('overview')", "overview", show=False),
        Binding("2", "view('findings')", "findings", show=False),
        Binding("3", "view('transactions')", "transactions", show=False),
        Binding("question_mark", "help", "help"),
        Binding("e", "export('csv')", "export"),
        Binding("E", "export('parquet')", "parquet", show=False),
        Binding("N", "export('ndjson')", "ndjson", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        paths: Sequence[str],
        options: Options | None = None,
        *,
        isolate: bool | None = None,
        engine: Engine | None = None,
    ) -> None:
        super().__init__()
        self.paths = list(paths)
        self.options = options or Options()
        self.engine = engine or Engine()
        # the analysis in a child process? (None: by the inputs' size)
        self.isolate = isolate if isolate is not None else total_bytes(self.paths) > ISOLATE_BYTES
        local_workers = self.engine.workers > 1 and self.engine.scheduler is None
        if self.isolate or local_workers:
            # Start multiprocessing's helper processes now: once the app runs, textual has
            # replaced sys.stderr, whose descriptor their launch wants to pass on.
            resource_tracker.ensure_running()
        if local_workers and not self.isolate:
            start_local_workers()
        self.analysis: Analysis | None = None
        self.error: PcapdnsError | None = None
        self.failure: str | None = None
        self.analysis_seconds = 0.0
        self.started = time.perf_counter()
        self.first_paint: float | None = None
        self._columns = 0

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(self._tabs("overview"), id="tabs")
            yield Static(text("  ".join(os.path.basename(p) for p in self.paths)), id="files")
        with Horizontal(id="progress-row"):
            yield Static(Text("reading", style="italic"), id="stage")
            yield ProgressBar(id="progress", show_eta=True)
        with ContentSwitcher(initial="overview", id="views"):
            yield OverviewView(id="overview")
            yield FindingsView(id="findings")
            yield TransactionsView(id="transactions")
        yield Footer()

    @property
    def main(self) -> Screen[Any]:
        """The screen holding the three views (queries go there even while a detail is open)."""
        return self.screen_stack[0]

    def _tabs(self, current: str) -> Text:
        out = Text()
        for key, label in VIEWS:
            out.append(f" {label} ", style="bold reverse" if key == current else "dim")
            out.append(" ")
        return out

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)
        self.main.query_one("#qps", Chart).focus()
        self.analyze(max(10, self.size.width - AXIS - 4))

    def _painted(self) -> None:
        self.first_paint = time.perf_counter() - self.started

    # -- the analysis worker --------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="analysis")
    def analyze(self, columns: int) -> None:
        """Run the analysis (here, or in a child process for a large capture) and relay its events."""
        if not self.isolate:
            run(self.paths, self.options, columns, self._relay, self.engine)
            return
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        try:
            events: Any = ctx.Queue()
            proc = ctx.Process(
                target=child, args=(self.paths, self.options, columns, events, self.engine), daemon=True
            )
            proc.start()
        except (OSError, ValueError) as e:
            self._relay(("crash", f"internal error: cannot start the analysis process: {e}"))
            return
        worker = get_current_worker()
        try:
            while True:
                if worker.is_cancelled:
                    return
                try:
                    event = events.get(timeout=0.1)
                except queue.Empty:
                    if proc.is_alive():
                        continue
                    try:  # it may have ended just after its last event: that one is still in the pipe
                        event = events.get(timeout=1.0)
                    except queue.Empty:
                        self._relay(
                            ("crash", f"internal error: the analysis process ended ({proc.exitcode})")
                        )
                        return
                self._relay(event)
                if event[0] != "progress":
                    return
        finally:
            if proc.is_alive():
                proc.terminate()  # our own child: on cancel (the app quits) or after a failure
            proc.join(timeout=5)

    def _relay(self, event: tuple[Any, ...]) -> None:
        """Turn one runner event into the message the UI handles (called in the worker thread)."""
        kind = event[0]
        if kind == "progress":
            self.post_message(AnalysisProgress(event[1], event[2], event[3]))
        elif kind == "warning":
            self.call_from_thread(
                self.notify, f"pcapdns: warning: {event[1]}", severity="warning", markup=False
            )
        elif kind == "done":
            self.post_message(AnalysisReady(event[1], event[2], event[3]))
        elif kind == "error":
            error = event[1](event[2], event[3])
            self.post_message(AnalysisFailed(event[2] + (f" ({event[3]})" if event[3] else ""), error))
        else:
            self.post_message(AnalysisFailed(event[1], RuntimeError(event[1])))

    def _chart_columns(self) -> int:
        return self.main.query_one(OverviewView).chart_columns()

    def on_analysis_progress(self, message: AnalysisProgress) -> None:
        bar = self.main.query_one("#progress", ProgressBar)
        bar.update(total=message.total or None, progress=message.done)
        self.main.query_one("#stage", Static).update(text(message.label, "italic"))

    def on_analysis_failed(self, message: AnalysisFailed) -> None:
        if isinstance(message.error, PcapdnsError):
            self.error = message.error
        self.failure = message.message
        self.main.query_one("#progress", ProgressBar).display = False
        # the error, whole (wrapped), on the line above every view; the views' own "analyzing…"
        # placeholders point to it
        self.main.query_one("#progress-row").add_class("-failed")
        self.main.query_one("#stage", Static).update(text(f"pcapdns: error: {message.message}", "bold red"))
        note = "no analysis: the error is above"
        self.main.query_one(OverviewView).failed(note)
        self.main.query_one(FindingsView).failed(note)
        self.main.query_one(TransactionsView).failed(note)

    def on_analysis_ready(self, message: AnalysisReady) -> None:
        a = message.analysis
        self.analysis = a
        self.analysis_seconds = message.seconds
        self.main.query_one("#progress-row").display = False
        self._columns = message.overview.buckets
        self.main.query_one(OverviewView).show(message.overview)
        self.main.query_one(FindingsView).load(a.anomalies, a.transactions)
        self.main.query_one(TransactionsView).load(a.transactions)
        # the packet detail's scapy dissection needs scapy: import it now, not when a packet opens
        threading.Thread(target=preload_scapy, name="pcapdns-scapy-preload", daemon=True).start()

    # -- overview width -------------------------------------------------------------------------

    def on_resize(self) -> None:
        if self.analysis is not None:
            self._refresh_overview(self.analysis, self._chart_columns())

    @work(thread=True, exclusive=True, group="overview")
    def _refresh_overview(self, analysis: Analysis, columns: int) -> None:
        self.post_message(OverviewReady(build_overview(analysis, columns)))

    def on_overview_ready(self, message: OverviewReady) -> None:
        self.main.query_one(OverviewView).show(message.overview)

    # -- navigation -----------------------------------------------------------------------------

    def action_view(self, key: str) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.main.query_one("#views", ContentSwitcher).current = key
        self.main.query_one("#tabs", Static).update(self._tabs(key))
        focus = {"overview": "#qps", "findings": "#findings-table", "transactions": "#txn-table"}[key]
        self.main.query_one(focus).focus()

    @property
    def current_view(self) -> str:
        return str(self.main.query_one("#views", ContentSwitcher).current)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_chart_zoom(self, message: Chart.Zoom) -> None:
        ov = self.main.query_one(OverviewView).overview
        start = ov.start_us + message.first * ov.bucket_us
        end = ov.start_us + (message.last + 1) * ov.bucket_us
        fmt = "%H:%M:%S.%f" if ov.bucket_us < 1_000_000 else "%H:%M:%S"
        first_day = datetime.fromtimestamp(ov.start_us / 1e6, tz=UTC).date()

        def when(us: int) -> str:
            stamp = datetime.fromtimestamp(us / 1e6, tz=UTC)
            return stamp.strftime(fmt) if stamp.date() == first_day else stamp.strftime("%Y-%m-%dT" + fmt)

        self.action_view("transactions")
        self.main.query_one(TransactionsView).set_filter(f"time>={when(start)} time<{when(end)}")
        self.notify(f"transactions from {clock(start, ov.bucket_us)} to {clock(end, ov.bucket_us)}")

    @on(FindingsView.ShowTransactions)
    def _finding_transactions(self, message: FindingsView.ShowTransactions) -> None:
        self.action_view("transactions")
        self.main.query_one(TransactionsView).set_filter(message.filter_text)

    def on_frame_table_row_selected(self, message: FrameTable.RowSelected) -> None:
        if self.analysis is None:
            return
        row = message.table.row(message.row)
        self.open_detail(row)

    def open_detail(self, row: dict[str, Any]) -> None:
        assert self.analysis is not None
        files = self.analysis.files
        file_id = files.index(row["file"]) if row.get("file") in files else 0
        self.push_screen(DetailScreen(row, self.analysis.malformed, self.options.ports, file_id))

    # -- export (pcapdns.report.export: the same writers as `pcapdns export`) --------------------

    def action_export(self, fmt: str = "csv") -> None:
        if self.analysis is None:
            self.notify("nothing to export yet: the analysis is still running", severity="warning")
            return
        if self.current_view == "findings":
            frame, what = self.analysis.anomalies, "findings"
        else:
            current = self.main.query_one(TransactionsView).current
            frame, what = (current if current is not None else self.analysis.transactions), "transactions"
        stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
        path = Path(f"pcapdns-{what}-{stamp}.{fmt}")
        table = "anomalies" if what == "findings" else "transactions"
        try:
            write_file(frame, fmt, path, table)
        except PcapdnsError as e:
            self.notify(f"export failed: {e.message}", severity="error", markup=False)
            return
        self.exported = str(path)
        self.notify(f"{frame.height:,} {what} written to {path}", markup=False)


def make_app(
    paths: Sequence[str],
    options: Options | None = None,
    *,
    isolate: bool | None = None,
    engine: Engine | None = None,
) -> PcapdnsApp:
    """The app for ``paths`` (one analysis over all of them), as ``pcapdns tui`` runs it.

    ``isolate`` runs the analysis in a child process (True), in the worker thread (False), or
    decides by the inputs' size (None: a child process above ``runner.ISOLATE_BYTES``).
    """
    return PcapdnsApp(paths, options, isolate=isolate, engine=engine)
