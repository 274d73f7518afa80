"""The findings view: the anomaly engine's table (schema ANOMALIES), sortable, with each finding's
summary, likely cause and evidence transactions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import polars as pl
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from pcapdns.dns.knowledge import rcode_info
from pcapdns.schema import ANOMALIES
from pcapdns.tui.overview import SEVERITY_COLORS
from pcapdns.tui.safe import text
from pcapdns.tui.table import Column, FrameTable, fit
from pcapdns.tui.transactions import TRANSACTION_COLUMNS

# The summary before the zone and the servers; on a narrow terminal the columns of the highest
# priority number go first (the detail pane below the table has everything).
_COLUMNS = (
    Column("rank", "#", 3),
    Column("severity", "severity", 8),
    Column("kind", "kind", 19, min_width=12),
    Column("start", "start", 8, priority=1),
    Column("duration", "for", 5, priority=3),
    Column("count", "count", 6, priority=2),
    Column("summary", "summary", 40, min_width=24, grow=True),
    Column("zone", "zone", 18, priority=4),
    Column("servers", "servers", 24, priority=5),
)
_PADDING = 2  # a DataTable cell's padding (one cell either side)
_SORTABLE = ("rank", "severity", "kind", "start", "count")
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    s = (end - start).total_seconds()
    return f"{s:.1f}s" if s < 60 else f"{s / 60:.1f}m" if s < 3600 else f"{s / 3600:.1f}h"


def finding_filter(row: dict[str, Any], day_of: datetime | None = None) -> str:
    """The transactions filter that shows a finding's window, servers and zone."""
    terms: list[str] = []
    for key, op in (("start", ">="), ("end", "<=")):
        when = row.get(key)
        if isinstance(when, datetime):
            terms.append(f"time{op}{when.strftime('%Y-%m-%dT%H:%M:%S.%f')}")
    servers = [s for s in row.get("servers") or [] if s and " " not in s and "," not in s]
    if servers:
        terms.append("server=" + ",".join(servers))
    zone = row.get("zone")
    if zone and " " not in zone:
        terms.append(f"qname~{zone}")
    return " ".join(terms)


class FindingsView(Vertical):
    """``enter`` shows a finding's evidence, ``t`` its transactions, ``s`` changes the sort."""

    BINDINGS = [
        Binding("s", "sort", "sort"),
        Binding("t", "transactions", "its transactions"),
    ]

    class ShowTransactions(Message):
        def __init__(self, filter_text: str) -> None:
            super().__init__()
            self.filter_text = filter_text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.anomalies = pl.DataFrame(schema=ANOMALIES)
        self.transactions: pl.DataFrame | None = None
        self.shown = self.anomalies
        self.sort_key = "rank"

    def compose(self) -> ComposeResult:
        yield Static(Text("analyzing…", style="italic"), id="findings-title")
        table: DataTable[Text] = DataTable(id="findings-table", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(id="finding-detail"):
            with VerticalScroll(id="finding-text-box"):
                yield Static(id="finding-text")
            yield FrameTable(TRANSACTION_COLUMNS, id="evidence")

    def on_mount(self) -> None:
        self._columns(self.size.width)

    def on_resize(self) -> None:
        if self._columns(self.size.width):
            self._fill(keep_cursor=True)

    def _columns(self, width: int) -> bool:
        """Lay the table's columns out for ``width`` cells; True when they changed."""
        table = self.query_one("#findings-table", DataTable)
        room = max(0, width - 2 - _PADDING * len(_COLUMNS))  # a scrollbar's width spare
        # fit() counts one cell between columns; a DataTable pads each by _PADDING: give it back
        wide = [
            replace(c, width=c.width + 1, min_width=None if c.min_width is None else c.min_width + 1)
            for c in _COLUMNS
        ]
        shown = [replace(c, width=c.width - 1) for c in fit(wide, room + len(_COLUMNS))]
        layout = [(c.key, c.width) for c in shown]
        if layout == getattr(self, "_layout", None):
            return False
        self._layout = layout
        self._shown_columns = shown
        table.clear(columns=True)
        for c in shown:
            table.add_column(c.title, key=c.key, width=c.width)
        return True

    def load(self, anomalies: pl.DataFrame, transactions: pl.DataFrame) -> None:
        self.anomalies = anomalies
        self.transactions = transactions
        n = anomalies.height
        title = Text(f"{n:,} finding{'s' if n != 1 else ''}", style="bold")
        if n == 0:
            title.append("  the anomaly engine found nothing to report in this capture", style="dim")
        else:
            title.append("  enter: evidence  t: transactions  s: sort", style="dim")
        self.query_one("#findings-title", Static).update(title)
        self._fill()

    def failed(self, line: str) -> None:
        self.query_one("#findings-title", Static).update(text(line, "italic"))

    def _sorted(self) -> pl.DataFrame:
        a = self.anomalies
        if self.sort_key == "severity":
            order = pl.col("severity").cast(pl.String).replace_strict(_SEVERITY_ORDER, default=9)
            return a.sort([order, pl.col("rank")])
        return a.sort([self.sort_key, "rank"], descending=[self.sort_key == "count", False], nulls_last=True)

    def _fill(self, keep_cursor: bool = False) -> None:
        table = self.query_one("#findings-table", DataTable)
        cursor = table.cursor_row if keep_cursor else 0
        table.clear()
        self.shown = self._sorted()
        for row in self.shown.iter_rows(named=True):
            sev = str(row["severity"])
            style = SEVERITY_COLORS.get(sev, "")
            start = row["start"]
            cells = {
                "rank": Text(str(row["rank"])),
                "severity": Text(sev, style=style),
                "kind": text(row["kind"]),
                "start": Text(start.strftime("%H:%M:%S") if start else ""),
                "duration": Text(_duration(start, row["end"])),
                "count": Text(f"{row['count']:,}" if row["count"] is not None else "", justify="right"),
                "summary": text(row["summary"] or ""),
                "zone": text(row["zone"] or ""),
                "servers": text(", ".join(row["servers"] or [])),
            }
            for c in self._shown_columns:  # one line a finding: cut, with an ellipsis
                cells[c.key].truncate(c.width, overflow="ellipsis")
            table.add_row(*(cells[c.key] for c in self._shown_columns), key=str(row["rank"]))
        if self.shown.height:
            cursor = min(cursor, self.shown.height - 1)
            table.move_cursor(row=cursor)
            self._show(cursor)

    def action_sort(self) -> None:
        self.sort_key = _SORTABLE[(_SORTABLE.index(self.sort_key) + 1) % len(_SORTABLE)]
        self._fill()
        self.notify(f"findings sorted by {self.sort_key}")

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key in _SORTABLE:
            self.sort_key = key
            self._fill()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row is not None and 0 <= event.cursor_row < self.shown.height:
            self._show(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.query_one("#evidence", FrameTable).focus()

    def current(self) -> dict[str, Any] | None:
        table = self.query_one("#findings-table", DataTable)
        if not self.shown.height:
            return None
        return self.shown.row(min(table.cursor_row, self.shown.height - 1), named=True)

    def action_transactions(self) -> None:
        row = self.current()
        if row is not None:
            self.post_message(self.ShowTransactions(finding_filter(row)))

    def _show(self, index: int) -> None:
        row = self.shown.row(index, named=True)
        out = Text()
        sev = str(row["severity"])
        out.append(f"#{row['rank']} {sev.upper()}  ", style=SEVERITY_COLORS.get(sev, "bold"))
        out.append(text(row["kind"], "bold"))
        out.append("\n\n")
        out.append(text(row["summary"] or ""))
        out.append("\n\nLikely cause\n", style="bold")
        out.append(text(row["likely_cause"] or "-"))
        info = rcode_info(row["rcode"]) if row["rcode"] else None
        if info is not None:
            out.append(f"\n\n{info.name} ({info.value}, {info.rfc})\n", style="bold")
            out.append(text(info.meaning))
            for cause in info.causes[:3]:
                out.append("\n • ")
                out.append(text(cause))
        evidence = row["evidence"] or []
        out.append(f"\n\nEvidence: {len(evidence)} packet(s)", style="bold")
        self.query_one("#finding-text", Static).update(out)
        table = self.query_one("#evidence", FrameTable)
        if self.transactions is None:
            return
        frames = [e["frame"] for e in evidence if e and e.get("frame") is not None]
        files = [e["file"] for e in evidence if e and e.get("file") is not None]
        t = self.transactions
        hit = pl.col("query_frame").is_in(frames) | pl.col("response_frame").is_in(frames)
        if files:
            path = pl.col("file").cast(pl.String)
            hit = hit & (path.is_in(files) | path.str.split("/").list.last().is_in(files))
        table.set_frame(t.filter(hit) if frames else t.clear())
