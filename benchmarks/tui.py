#!/usr/bin/env python3
"""Measure the TUI: time to first paint, key latency while the analysis runs, filtering, and the
virtual table at a million rows.

    python benchmarks/tui.py                     # a 200,000-packet capture (built first if absent)
    python benchmarks/tui.py --packets 2000000   # the 2-million-packet capture of benchmarks/run.py

The app runs headless (``App.run_test``) at 120x40, exactly as the tests drive it.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import polars as pl  # noqa: E402

from benchmarks.run import default_capture  # noqa: E402
from pcapdns.tui import make_app  # noqa: E402
from pcapdns.tui.table import FrameTable  # noqa: E402
from pcapdns.tui.transactions import TransactionsView  # noqa: E402

FILTERS = (
    "rcode=SERVFAIL",
    "status=unanswered",
    "qname~example latency>50ms",
    "rcode!=NOERROR qtype=AAAA,HTTPS client~10.",
)


async def app_figures(path: Path) -> dict[str, float]:
    app = make_app([str(path)])
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        out["first paint (s)"] = app.first_paint or 0.0
        worst = 0.0
        presses = 0
        deadline = time.perf_counter() + 600
        while app.analysis is None and app.failure is None and time.perf_counter() < deadline:
            for key in ("3", "1"):
                started = time.perf_counter()
                await pilot.press(key)
                worst = max(worst, time.perf_counter() - started)
                presses += 1
        out["analysis (s)"] = app.analysis_seconds
        out["keys pressed during analysis"] = presses
        out["slowest key during analysis (s)"] = worst
        view = app.main.query_one(TransactionsView)
        out["transactions"] = view.transactions.height if view.transactions is not None else 0
        for text in FILTERS:
            view.set_filter(text)
            await app.workers.wait_for_complete()
            out[f"filter {text!r} (s)"] = view.filter_seconds
    return out


async def table_figures(rows: int, path: Path) -> dict[str, float]:
    """The TUI's transactions view over a synthetic frame of ``rows`` rows."""
    app = make_app([str(path)])
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        while app.analysis is None and app.failure is None:
            await pilot.pause(0.05)
        if app.analysis is None:
            raise SystemExit(f"pcapdns: {app.failure}")
        t = app.analysis.transactions
        big = t[pl.int_range(0, rows, eager=True) % t.height]
        view = app.main.query_one(TransactionsView)
        await pilot.press("3")
        started = time.perf_counter()
        view.load(big)
        await app.workers.wait_for_complete()
        await pilot.pause()
        out[f"show {rows:,} rows (s)"] = time.perf_counter() - started
        table = app.main.query_one("#txn-table", FrameTable)
        for key in ("end", "home", "pagedown", "down"):
            started = time.perf_counter()
            await pilot.press(key)
            out[f"key {key} (s)"] = time.perf_counter() - started
        out["rows formatted"] = table.rows_formatted
        for text in FILTERS:
            view.set_filter(text)
            await app.workers.wait_for_complete()
            out[f"filter {text!r} on {rows:,} rows (s)"] = view.filter_seconds
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    path = default_capture(args.packets)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make = [
            sys.executable,
            str(HERE / "make_capture.py"),
            "--packets",
            str(args.packets),
            "-o",
            str(path),
        ]
        subprocess.run(make, check=True)
    figures = asyncio.run(app_figures(path))
    if not figures.get("transactions"):
        raise SystemExit("the analysis did not finish")
    figures.update(asyncio.run(table_figures(args.rows, path)))
    print(f"capture: {path} ({args.packets:,} packets)")
    for name, value in figures.items():
        print(f"  {name:<58} {value:,.3f}" if isinstance(value, float) else f"  {name:<58} {value:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
