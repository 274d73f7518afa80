"""SVG snapshots of the TUI's screens at 120x40 and 80x24 (pytest-textual-snapshot; update with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs before committing)."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tuihelp import OUTAGE, ROOT, settle

from pcapdns.tui import make_app

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # paths shown on screen stay relative, the same in every checkout


def steps(*actions: str | tuple[str, str]):
    """A run_before that waits for the analysis, then presses keys or applies ('filter', text)."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(pilot, app)
        for action in actions:
            if isinstance(action, tuple):
                await pilot.press("slash")
                app.main.query_one("#filter", Input).value = action[1]
                await pilot.press("enter")
            else:
                await pilot.press(action)
            await settle(pilot, app)

    return run_before


def test_overview(snap_compare):
    assert snap_compare(make_app([OUTAGE]), terminal_size=SIZE, run_before=steps())


def test_transactions_filtered(snap_compare):
    app = make_app([OUTAGE])
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("3", ("filter", "rcode=SERVFAIL ede=22")))


def test_packet_detail(snap_compare):
    app = make_app([OUTAGE])
    assert snap_compare(app, terminal_size=SIZE, run_before=steps("3", ("filter", "frame=2316"), "enter"))


def test_hex_dump_highlights_a_malformation(snap_compare):
    app = make_app(["samples/formerr.pcap"])
    run = steps("3", ("filter", "frame=19"), "enter", "x")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_findings(snap_compare):
    assert snap_compare(make_app([OUTAGE]), terminal_size=SIZE, run_before=steps("2"))  # the real engine


# -- the same screens at 80x24, the smallest usual terminal ------------------------------------------
SMALL = (80, 24)


def test_overview_80x24(snap_compare):
    assert snap_compare(make_app([OUTAGE]), terminal_size=SMALL, run_before=steps())


def test_findings_80x24(snap_compare):
    assert snap_compare(make_app([OUTAGE]), terminal_size=SMALL, run_before=steps("2"))


def test_transactions_80x24(snap_compare):
    app = make_app([OUTAGE])
    assert snap_compare(app, terminal_size=SMALL, run_before=steps("3", ("filter", "rcode=SERVFAIL ede=22")))


def test_packet_detail_80x24(snap_compare):
    app = make_app([OUTAGE])
    assert snap_compare(app, terminal_size=SMALL, run_before=steps("3", ("filter", "frame=2316"), "enter"))


def test_help_80x24(snap_compare):
    assert snap_compare(make_app([OUTAGE]), terminal_size=SMALL, run_before=steps("question_mark"))
