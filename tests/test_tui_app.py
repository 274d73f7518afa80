"""Pilot tests of the TUI's behaviour on samples/outage.pcap: start-up, navigation, filtering,
zoom, drill-down to the packets, findings, export, and hostile names."""

from __future__ import annotations

import threading

import polars as pl
import pytest
from textual.widgets import DataTable, Input, Static
from tuihelp import (
    HOSTILE_LABELS,
    OUTAGE,
    ROOT,
    SCENARIO,
    findings_app,
    run_async,
    settle,
    until,
    write_hostile,
)

import pcapdns.tui.app as app_module
from pcapdns.errors import ExitStatus
from pcapdns.pipeline import analyze
from pcapdns.tui import make_app
from pcapdns.tui.app import HelpScreen
from pcapdns.tui.chart import Chart
from pcapdns.tui.detail import DetailScreen
from pcapdns.tui.overview import OverviewView
from pcapdns.tui.packet import hexdump, render_message
from pcapdns.tui.table import FrameTable
from pcapdns.tui.transactions import TransactionsView

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


async def apply_filter(pilot, app, value: str) -> None:
    """Focus the filter bar with its key, put ``value`` in it and apply it with enter."""
    await pilot.press("slash")
    app.main.query_one("#filter", Input).value = value
    await pilot.press("enter")
    await settle(pilot, app)


def static_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


@run_async
async def test_window_is_usable_before_the_analysis_and_fills_in(monkeypatch):
    # the real analysis, held back until the window has been drawn and has answered a key
    release = threading.Event()
    real_run = app_module.run

    def held_run(*args, **kwargs):
        assert release.wait(timeout=60), "the test never let the analysis run"
        return real_run(*args, **kwargs)

    monkeypatch.setattr(app_module, "run", held_run)
    app = make_app([OUTAGE])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.first_paint is not None and app.analysis is None  # drawn before any result
        assert app.main.query_one("#progress-row").display
        await pilot.press("3")  # keys work while the analysis runs
        assert app.current_view == "transactions"
        await pilot.press("1")
        assert app.current_view == "overview"
        release.set()
        await settle(pilot, app)
        assert app.analysis is not None and app.analysis.transactions.height == 3126
        assert not app.main.query_one("#progress-row").display
        quality = static_text(app, "#quality")
        assert "outage.pcap" in quality and "5,930 frames" in quality and "decode issues 0" in quality
        ov = app.main.query_one(OverviewView).overview
        # the chart's buckets hold every transaction exactly once
        seconds = ov.bucket_us / 1e6
        assert round(sum(sum(v) for v in ov.qps.values()) * seconds) == 3126
        assert round(sum(ov.qps["unanswered"]) * seconds) == 334
        assert [s.who for s in ov.servers][:1] == ["10.0.0.53"]


@run_async
async def test_keys_switch_views_and_help():
    app = make_app([OUTAGE])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.current_view == "overview" and isinstance(app.focused, Chart)
        await pilot.press("3")
        assert app.current_view == "transactions" and app.focused.id == "txn-table"
        await pilot.press("2")
        assert app.current_view == "findings"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("1")
        assert app.current_view == "overview"


@run_async
async def test_filter_bar_filters_and_reports_errors_inline():
    app = make_app([OUTAGE])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("3", "slash", *"rcode=SERVFAIL latency>2s", "enter")
        await settle(pilot, app)
        table = app.main.query_one("#txn-table", FrameTable)
        expected = app.analysis.transactions.filter(
            (pl.col("rcode_name") == "SERVFAIL") & (pl.col("rtt") > 2.0)
        ).height
        assert 0 < table.row_count == expected < 109
        assert "of 3,126" in static_text(app, "#count")
        assert app.focused is table
        await apply_filter(pilot, app, "latency>soon")
        error = app.main.query_one("#filter-error", Static)
        assert error.display and "expected a duration" in str(error.render())
        assert table.row_count == expected  # the last good filter stays applied
        await apply_filter(pilot, app, "")
        assert not error.display and table.row_count == 3126


@run_async
async def test_chart_cursor_zooms_into_a_time_range():
    app = make_app([OUTAGE])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        ov = app.main.query_one(OverviewView).overview
        chart = app.main.query_one("#qps", Chart)
        first = (SCENARIO["per_minute"][4]["minute"] * 60_000_000) // ov.bucket_us  # 10:04
        chart.cursor = first
        await pilot.press("shift+right", "shift+right", "enter")
        await settle(pilot, app)
        assert app.current_view == "transactions"
        seconds = ov.bucket_us / 1e6
        in_range = sum(sum(ov.qps[k][first : first + 3]) for k in ov.qps) * seconds
        assert app.main.query_one("#txn-table", FrameTable).row_count == round(in_range) > 0
        assert app.main.query_one("#filter").value.startswith("time>=10:04:00 time<10:04:")


@run_async
async def test_drill_down_to_the_packets_of_a_servfail():
    app = make_app([OUTAGE])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        await apply_filter(pilot, app, "frame=2316")
        await pilot.press("enter")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.sides is not None
        query, response = screen.sides
        assert response.frame == 2316 and query.message is not None and not query.message.qr
        decoded = str(screen.query_one("#decoded-response", Static).render())
        assert "SERVFAIL" in decoded and "22 No Reachable Authority" in decoded
        assert "m.shop.example" not in decoded or "shop.example" in decoded
        await pilot.press("s")
        assert "###[ DNS ]###" in str(screen.query_one("#scapy-response", Static).render())
        await pilot.press("x")
        hexed = str(screen.query_one("#hex-query", Static).render())
        assert hexed.splitlines()[1].startswith("0000  ")
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen) and app.current_view == "transactions"


@run_async
async def test_findings_show_evidence_and_lead_to_their_transactions():
    app = findings_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("2")
        table = app.main.query_one("#findings-table", DataTable)
        evidence = app.main.query_one("#evidence", FrameTable)
        await until(pilot, lambda: app.focused is table and evidence.row_count > 0, "the findings view")
        assert table.row_count == 2
        frames = SCENARIO["outage"]["servfail_frames"][:3]
        assert evidence.row_count == 3
        assert sorted(evidence.frame.get_column("response_frame").to_list()) == frames
        text = static_text(app, "#finding-text")
        assert "servfail_cause" in text and "Likely cause" in text
        assert "SERVFAIL (2, RFC" in text  # the RCODE knowledge of `pcapdns explain`
        await pilot.press("down")
        second = "[bold]no route[/bold]"  # literal, not markup
        await until(pilot, lambda: second in static_text(app, "#finding-text"), "the second finding's text")
        await pilot.press("t")
        await settle(pilot, app)
        assert app.current_view == "transactions"
        shown = app.main.query_one(TransactionsView).current
        unanswered = set(SCENARIO["outage"]["unanswered_upstream_query_frames"])
        got = set(shown.get_column("query_frame").to_list())
        assert unanswered <= got  # every unanswered upstream query of the outage is there
        assert set(shown.get_column("server").cast(pl.String)) <= set(SCENARIO["outage"]["servers"])
        await pilot.press("2", "s")
        await until(pilot, lambda: app.focused is table, "the findings view again")
        assert app.main.query_one("#findings").sort_key == "severity"
        # enter on a finding moves to its evidence; enter there opens the packets
        await pilot.press("up", "enter")
        await until(pilot, lambda: app.focused is evidence, "the evidence table's focus")
        await pilot.press("enter")
        await settle(pilot, app)
        assert isinstance(app.screen, DetailScreen) and app.screen.row["response_frame"] == frames[0]


@run_async
async def test_export_writes_the_filtered_view(tmp_path, monkeypatch):
    app = make_app([str(ROOT / OUTAGE)])
    monkeypatch.chdir(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        await apply_filter(pilot, app, "ede=22")
        await pilot.press("e", "E")
    files = list(tmp_path.glob("pcapdns-transactions-*.csv"))
    assert len(files) == 1 and not list(tmp_path.glob(".pcapdns-*"))
    got = pl.read_csv(files[0])
    assert got.height == 58 and set(got.get_column("rcode_name").to_list()) == {"SERVFAIL"}
    assert sorted(got.get_column("response_frame").to_list()) == SCENARIO["outage"]["ede22_frames"]
    (parquet,) = tmp_path.glob("pcapdns-transactions-*.parquet")
    back = pl.read_parquet(parquet)
    assert back.height == 58 and back.get_column("ede").to_list() == [[22]] * 58


@run_async
async def test_hostile_names_never_reach_the_terminal_raw(tmp_path):
    path = tmp_path / "hostile.pcap"
    write_hostile(path)
    app = make_app([str(path)])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("3")
        screen_svg = app.export_screenshot()
        assert "[bold]evil[/bold].example" in screen_svg  # markup shown as text
        assert "\\027[31mred\\027[0m.example" in screen_svg  # ESC as \DDD (presentation form)
        assert "bell\\007\\000nul.example" in screen_svg
        await pilot.press("down", "enter")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.sides is not None
        for side in screen.sides:
            for rendered in (render_message(side), hexdump(side)):
                assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in rendered.plain)
        decoded = str(screen.query_one("#decoded-response", Static).render())
        assert "[bold]evil[/bold].example" in decoded
        assert "\\x1b[2J[red]wiped[/red]" in decoded  # EDE extra text: escaped, markup literal
        scapy = str(screen.query_one("#scapy-query", Static).render())
        assert "\x1b" not in scapy and "\x07" not in scapy
    assert len(HOSTILE_LABELS) == 4


@run_async
async def test_a_file_that_is_not_a_capture_is_reported_in_the_window(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture\n")
    app = make_app([str(bad)])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.error is not None and "not a pcap" in app.failure
        assert "pcapdns: error:" in static_text(app, "#stage")


@run_async
async def test_the_analysis_can_run_in_a_child_process(tmp_path):
    app = make_app([OUTAGE], isolate=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, timeout=60)
        assert app.analysis is not None
        direct = analyze([OUTAGE]).transactions
        assert app.analysis.transactions.equals(direct)
        assert "5,930 frames" in static_text(app, "#quality")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture\n")
    app = make_app([str(bad)], isolate=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, timeout=60)
        # the error crosses the process boundary with its class, message and hint
        assert app.error is not None and app.error.exit_status == ExitStatus.BAD_CAPTURE
        assert "not a pcap" in app.failure


@run_async
async def test_workers_read_the_captures_in_parallel_with_the_same_result(tmp_path, monkeypatch):
    """``pcapdns tui --workers 2``: the files go to worker processes; a bad one is a warning."""
    import pcapdns.parallel.engine as engine_module
    from pcapdns.parallel import Engine

    runs = []
    real = engine_module._run_local
    monkeypatch.setattr(
        engine_module, "_run_local", lambda run, tasks, n: runs.append((len(tasks), n)) or real(run, tasks, n)
    )
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture\n")
    files = [OUTAGE, str(ROOT / "samples" / "tcp-fallback.pcap"), str(bad)]
    app = make_app(files, isolate=False, engine=Engine(workers=2))
    notified: list[str] = []  # recorded as they come: a notification on screen expires after seconds
    notify = app.notify
    app.notify = lambda message, **kw: notified.append(str(message)) or notify(message, **kw)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, timeout=60)
        assert runs == [(2, 2)], app.failure  # the two captures, on two local processes
        assert app.failure is None, app.failure
        assert app.analysis is not None
        direct = analyze(files[:2])
        assert app.analysis.transactions.equals(direct.transactions)
        assert any("notes.pcap" in message for message in notified)
