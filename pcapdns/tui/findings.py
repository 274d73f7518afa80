"""The findings view: the anomaly engine's table (schema ANOMALIES), sortable, with each finding's
summary, likely cause and evidence transactions."""

from __future__ import annotations

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
from pcapdns.tui.table import FrameTable
from pcapdns.tui.transactions import TRANSACTION_COLUMNS

_COLUMNS = (
    ("rank", "#"),
    ("severity", "severity"),
    ("kind", "kind"),
    ("start", "start"),
    ("duration", "for"),
    ("zone", "zone"),
    ("servers", "servers"),
    ("count", "count"),
    ("summary", "summary"),
)
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
        table = self.query_one("#findings-table", DataTable)
        for key, title in _COLUMNS:
            table.add_column(title, key=key)

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

    def _sorted(self) -> pl.DataFrame:
        a = self.anomalies
        if self.sort_key == "severity":
            order = pl.col("severity").cast(pl.String).replace_strict(_SEVERITY_ORDER, default=9)
            return a.sort([order, pl.col("rank")])
        return a.sort([self.sort_key, "rank"], descending=[self.sort_key == "count", False], nulls_last=True)

    def _fill(self) -> None:
        table = self.query_one("#findings-table", DataTable)
        table.clear()
        self.shown = self._sorted()
        for row in self.shown.iter_rows(named=True):
            sev = str(row["severity"])
            style = SEVERITY_COLORS.get(sev, "")
            start = row["start"]
            cells = [
                Text(str(row["rank"])),
                Text(sev, style=style),
                text(row["kind"]),
                Text(start.strftime("%H:%M:%S") if start else ""),
                Text(_duration(start, row["end"])),
                text(row["zone"] or ""),
                text(", ".join(row["servers"] or [])),
                Text(f"{row['count']:,}" if row["count"] is not None else "", justify="right"),
                text(row["summary"] or ""),
            ]
            table.add_row(*cells, key=str(row["rank"]))
        if self.shown.height:
            self._show(0)

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
