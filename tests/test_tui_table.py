"""The virtualised transactions table at a million rows: only the visible window is formatted."""

from __future__ import annotations

import polars as pl
import pytest
from textual.app import App, ComposeResult
from tuihelp import ROOT, run_async

from pcapdns.pipeline import analyze
from pcapdns.tui.table import PAGE, FrameTable
from pcapdns.tui.transactions import TransactionsView

ROWS = 1_000_000


@pytest.fixture(scope="module")
def million() -> pl.DataFrame:
    """A million transactions: the outage sample's rows repeated, numbered by query frame."""
    t = analyze([str(ROOT / "samples/outage.pcap")]).transactions
    index = pl.int_range(0, ROWS, eager=True) % t.height
    big = t[index]
    return big.with_columns(pl.int_range(1, ROWS + 1, dtype=pl.UInt32).alias("query_frame"))


class TableApp(App[None]):
    def __init__(self, frame: pl.DataFrame) -> None:
        super().__init__()
        self.frame = frame

    def compose(self) -> ComposeResult:
        yield TransactionsView(id="view")

    def on_mount(self) -> None:
        self.query_one(TransactionsView).load(self.frame)


@run_async
async def test_a_million_rows_scroll_without_formatting_them(million):
    app = TableApp(million)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.query_one(FrameTable)
        table.focus()
        assert table.row_count == ROWS
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == ROWS - 1
        last = million.row(ROWS - 1, named=True)
        bottom = "".join(seg.text for seg in table.render_line(table.size.height - 1))
        assert bottom.startswith(last["ts"].strftime("%H:%M:%S.%f")[:12]) and last["qname"] in bottom
        await pilot.press("pageup", "pageup", "home", "down")
        assert table.cursor_row == 1
        # first page, last page(s) and two pages up: a handful of pages, never the table
        assert table.rows_formatted <= 6 * PAGE


@run_async
async def test_filtering_a_million_rows(million):
    app = TableApp(million)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        view = app.query_one(TransactionsView)
        view.set_filter("rcode=SERVFAIL qname~shop")
        await app.workers.wait_for_complete()
        await pilot.pause()
        expected = million.filter(
            (pl.col("rcode_name") == "SERVFAIL") & pl.col("qname").str.contains("shop", literal=True)
        ).height
        assert view.table.row_count == expected > 0
        assert view.table.rows_formatted <= 3 * PAGE
