"""The TUI at 80x24 (the smallest usual terminal) and at 200x60: every screen's key content is on
screen without scrolling, the columns that matter survive, help and footer fit.

What is "on screen" is read from the app's own screenshot (:func:`tuihelp.screen_lines`), line
by line, as a person would see it.
"""

from __future__ import annotations

import threading

import pytest
from textual.widgets import DataTable, Input, Static
from tuihelp import OUTAGE, ROOT, run_async, screen_lines, screen_text, settle

import pcapdns.tui.packet as packet
from pcapdns.tui import make_app
from pcapdns.tui.detail import DetailScreen
from pcapdns.tui.table import Column, FrameTable, fit
from pcapdns.tui.transactions import TRANSACTION_COLUMNS

SMALL = (80, 24)
LARGE = (200, 60)


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def fits(app) -> None:
    """No line of the screen is wider than the terminal."""
    width = app.size.width
    for line in screen_lines(app):
        assert len(line.rstrip()) <= width, line


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
@run_async
async def test_overview_shows_the_incidents_first(size):
    app = make_app([OUTAGE])
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        lines = screen_lines(app)
        shown = "\n".join(lines)
        # the quality line, then every finding of the capture, then the charts
        assert "5,930 frames" in shown
        kinds = [str(k) for k in app.analysis.anomalies.sort("rank").get_column("kind")]
        assert len(kinds) == 5
        for rank, kind in enumerate(kinds, 1):
            assert any(line.lstrip().startswith(f"#{rank}") and kind in line for line in lines), kind
        assert "Queries/s" in shown
        assert lines[-1].lstrip().startswith("⏎ zoom in")  # the footer, whole
        assert "^p palette" in lines[-1]
        fits(app)


@run_async
async def test_top_servers_keep_their_numbers_when_narrow():
    app = make_app([OUTAGE])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        overview = app.main.query_one("#overview")
        overview.scroll_end(animate=False)
        await pilot.pause()
        shown = screen_text(app)
        for title in ("queries", "ans", "p95 ms"):
            assert shown.count(title) >= 2, title  # in both tables: servers and clients
        top = app.analysis.transactions.get_column("server").cast(str).value_counts(sort=True)
        server, queries = top.row(0)
        assert any(server in line and f"{queries:,}" in line for line in screen_lines(app))
        assert app.main.query_one("#breakdowns").has_class("-stacked")
        fits(app)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
@run_async
async def test_findings_show_the_summary_before_the_zone(size):
    app = make_app([OUTAGE])
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("2")
        await settle(pilot, app)
        table = app.main.query_one("#findings-table", DataTable)
        keys = [str(k.value) for k in table.columns]
        assert keys[:3] == ["rank", "severity", "kind"] and "summary" in keys
        if "zone" in keys:
            assert keys.index("summary") < keys.index("zone")
        assert ("zone" in keys) == (size == LARGE)  # the zone gives way at 80 columns
        lines = screen_lines(app)
        first = app.analysis.anomalies.sort("rank").row(0, named=True)
        row = next(line for line in lines if line.lstrip().startswith("1 ") and "critical" in line)
        assert first["summary"][:12] in row  # the summary starts on the finding's line
        assert "Likely cause" in "\n".join(lines)  # and the detail pane is on screen too
        fits(app)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
@run_async
async def test_transactions_keep_client_and_server(size):
    app = make_app([OUTAGE])
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        await settle(pilot, app)
        table = app.main.query_one("#txn-table", FrameTable)
        titles = [c.title for c in table.columns]
        for title in ("time", "qname", "rcode", "client", "server"):
            assert title in titles
        assert (len(titles) == len(TRANSACTION_COLUMNS)) == (size == LARGE)
        first = table.row(0)
        line = next(
            line for line in screen_lines(app) if line.startswith(first["ts"].strftime("%H:%M:%S.%f")[:12])
        )
        assert str(first["client"]) in line and str(first["server"]) in line
        fits(app)


@run_async
async def test_the_empty_filter_never_looks_applied():
    app = make_app([OUTAGE])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        await settle(pilot, app)
        box = app.main.query_one("#filter", Input)
        assert box.value == "" and box.placeholder.startswith("type a filter")
        style = box.get_component_rich_style("input--placeholder")
        assert style.italic
        total = app.analysis.transactions.height
        assert f"{total:,} of {total:,}" in screen_text(app)  # nothing is filtered


@run_async
async def test_help_fits_80x24():
    app = make_app([OUTAGE])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        lines = screen_lines(app)
        assert lines[0].startswith("╭─ help") and lines[0].rstrip().endswith("╮")
        assert lines[-1].startswith("╰") and "escape or ? closes" in lines[-1]
        for line in lines[1:-1]:  # every line inside the box: nothing cut at the right border
            assert line.startswith("│") and line.rstrip().endswith(
                ("│", "▅", "▁", "▃", "▆", "▇", "▂", "▄", "█")
            )
        fits(app)
        await pilot.press("escape")
        assert "help" not in app.screen.__class__.__name__.lower()


@run_async
async def test_a_bad_file_replaces_every_analyzing_line(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture\n")
    app = make_app([str(bad)])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        assert app.failure is not None
        for view in ("1", "2", "3"):
            await pilot.press(view)
            await pilot.pause()
            shown = " ".join(screen_text(app).split())  # the error wraps where it must
            assert "analyzing" not in shown, view
            assert "not a pcap" in shown, view


@run_async
async def test_packet_detail_shows_the_decoded_message_without_waiting_for_scapy(monkeypatch):
    """scapy is slow to import (seconds): the decoded and hex views must not wait for it, and both
    messages' frames are read in one pass over the capture."""
    release = threading.Event()
    real = packet._scapy
    reads: list[list[int]] = []
    real_read = packet.read_frames

    def slow_scapy(stored):
        release.wait(30)
        return real(stored)

    def counting_read(path, frames):
        reads.append(list(frames))
        return real_read(path, frames)

    monkeypatch.setattr(packet, "_scapy", slow_scapy)
    monkeypatch.setattr("pcapdns.tui.detail.read_frames", counting_read)
    app = make_app([OUTAGE])
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        await settle(pilot, app)
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        while screen.sides is None:  # DetailLoaded: only scapy is still on its way
            await pilot.pause(0.05)
        decoded = str(screen.query_one("#decoded-response", Static).render())
        assert "RESPONSE" in decoded and "NOERROR" in decoded
        assert "dissecting" in str(screen.query_one("#scapy-query", Static).render())
        assert len(reads) == 1 and set(reads[0]) == {screen.row["query_frame"], screen.row["response_frame"]}
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "###[ Ethernet ]###" in str(screen.query_one("#scapy-query", Static).render())
        fits(app)


def test_fit_drops_by_priority_and_shrinks_at_its_turn():
    cols = [
        Column("a", "a", 10),
        Column("name", "name", 30, min_width=10, shrink_priority=3, grow=True),
        Column("b", "b", 10, priority=5),
        Column("c", "c", 10, priority=1),
        Column("d", "d", 10, priority=5),
    ]

    def widths(w: int) -> list[tuple[str, int]]:
        return [(c.key, c.width) for c in fit(cols, w)]

    assert widths(200) == [("a", 10), ("name", 155), ("b", 10), ("c", 10), ("d", 10)]  # the rest grows
    assert widths(75) == [("a", 10), ("name", 30), ("b", 10), ("c", 10), ("d", 10)]
    assert widths(74) == [("a", 10), ("name", 40), ("b", 10), ("c", 10)]  # the rightmost of equals
    assert widths(44) == [("a", 10), ("name", 21), ("c", 10)]  # both priority 5 gone, then the shrink
    assert widths(30) == [("a", 10), ("name", 18)]
    assert widths(5) == [("a", 10), ("name", 10)]  # never below what cannot go
