"""The transactions view: a filter bar over the virtualised table of every transaction."""

from __future__ import annotations

import time as clock
from datetime import date, datetime
from typing import Any

import polars as pl
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Static

from pcapdns.tui.filter import FilterError, compile_filter
from pcapdns.tui.messages import FilterDone
from pcapdns.tui.safe import text
from pcapdns.tui.table import Column, FrameTable

RCODE_COLORS = {
    "NOERROR": "green",
    "NXDOMAIN": "yellow",
    "SERVFAIL": "bold red",
    "REFUSED": "red",
    "FORMERR": "red",
}
STATUS_TEXT = {"answered": "answered", "unanswered": "timeout", "capture_ended": "cap-end"}


def _ts(v: datetime | None) -> str:
    return "" if v is None else v.strftime("%H:%M:%S.%f")[:12]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:,.1f}"


def _ms_color(v: float | None) -> str | None:
    if v is None:
        return "magenta"
    return "red" if v >= 1.0 else "yellow" if v >= 0.2 else None


def _ede(v: list[int] | None) -> str:
    return ",".join(str(c) for c in v) if v else ""


def _frame(v: int | None) -> str:
    return "-" if v is None else str(v)


# At 80 columns: time, qname (shrunk), rcode, ms, client and server; the rest as width allows.
TRANSACTION_COLUMNS = [
    Column("ts", "time", 12, _ts, priority=1),
    Column("qname", "qname", 34, min_width=12, shrink_priority=3, grow=True),
    Column("qtype_name", "type", 6, priority=3),
    Column("rcode_name", "rcode", 8, lambda v: "-" if v is None else str(v), color=RCODE_COLORS.get),
    Column("rtt", "ms", 8, _ms, right=True, color=_ms_color, priority=2),
    Column(
        "status",
        "status",
        8,
        lambda v: STATUS_TEXT.get(v, str(v)),
        color=lambda v: None if v == "answered" else "magenta",
        priority=4,
    ),
    Column("retransmissions", "rtx", 3, lambda v: str(v) if v else "", right=True, priority=7),
    Column("client", "client", 15, priority=1),
    Column("server", "server", 15, priority=1),
    Column("transport", "tx", 3, priority=6),
    Column("ede", "ede", 4, _ede, color=lambda v: "magenta" if v else None, priority=6),
    Column("query_frame", "query#", 7, _frame, right=True, priority=5),
    Column("response_frame", "resp#", 7, _frame, right=True, priority=5),
]

# An instruction, not a filter: it must never read as one that is applied (it is drawn dim)
PLACEHOLDER = "type a filter, e.g. rcode=SERVFAIL"


class TransactionsView(Vertical):
    """``/`` edits the filter (``enter`` applies it), ``enter`` on a row opens the packet detail."""

    BINDINGS = [
        Binding("slash", "focus_filter", "filter"),
        Binding("escape", "focus_table", "table", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.transactions: pl.DataFrame | None = None
        self.day: date | None = None
        self.current: pl.DataFrame | None = None
        self.filter_text = ""
        self.filter_seconds = 0.0

    def compose(self) -> ComposeResult:
        with Horizontal(id="filter-bar"):
            yield Input(placeholder=PLACEHOLDER, id="filter")
            yield Static("", id="count")
        yield Static("", id="filter-error")
        yield FrameTable(TRANSACTION_COLUMNS, id="txn-table")

    @property
    def table(self) -> FrameTable:
        return self.query_one("#txn-table", FrameTable)

    def load(self, transactions: pl.DataFrame) -> None:
        self.transactions = transactions
        first = transactions.get_column("ts").min() if transactions.height else None
        self.day = first.date() if isinstance(first, datetime) else None
        self.apply(self.query_one("#filter", Input).value)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def set_filter(self, value: str) -> None:
        """Replace the filter text and apply it (used by zoom and finding drill-down)."""
        self.query_one("#filter", Input).value = value
        self.apply(value)

    @on(Input.Submitted, "#filter")
    def _submitted(self, event: Input.Submitted) -> None:
        self.apply(event.value)
        self.table.focus()

    def apply(self, value: str) -> None:
        error = self.query_one("#filter-error", Static)
        try:
            expr = compile_filter(value, self.day)
        except FilterError as e:
            line = Text("  ")
            line.append(value[: e.start])
            line.append(value[e.start : e.end] or " ", style="bold white on red")
            line.append(value[e.end :])
            line.append("   " + e.message, style="red")
            error.update(line)
            error.display = True
            return
        error.display = False
        if self.transactions is not None:
            self._filter(value, self.transactions, expr)

    @work(thread=True, exclusive=True, group="filter")
    def _filter(self, value: str, frame: pl.DataFrame, expr: pl.Expr) -> None:
        started = clock.perf_counter()
        out = frame.filter(expr) if value.strip() else frame
        self.post_message(FilterDone(value, out, clock.perf_counter() - started))

    def on_filter_done(self, message: FilterDone) -> None:
        self.current = message.frame
        self.filter_text = message.text
        self.filter_seconds = message.seconds
        self.table.set_frame(message.frame)
        total = self.transactions.height if self.transactions is not None else 0
        count = Text(f"{message.frame.height:,}", style="bold")
        count.append(f" of {total:,}")
        self.query_one("#count", Static).update(count)

    def failed(self, line: str) -> None:
        self.query_one("#count", Static).update(text(line, "italic"))

    def selected(self, row: int) -> dict[str, Any]:
        return self.table.row(row)
