"""Helpers for the TUI tests: wait for the worker, a findings frame built from real transactions,
and a capture full of hostile names (escape sequences, control bytes, rich markup)."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import pcapbuild as pb
import polars as pl
from dnsbuild import labels, message, opt, option, question
from textual.worker import WorkerCancelled

from pcapdns.pipeline import Options
from pcapdns.schema import ANOMALIES
from pcapdns.tables.summary import Analysis
from pcapdns.tui.app import PcapdnsApp
from pcapdns.tui.data import build_overview

ROOT = Path(__file__).resolve().parents[1]
OUTAGE = "samples/outage.pcap"  # relative to ROOT: the tests chdir there (stable text in snapshots)
SCENARIO: dict[str, Any] = json.loads((ROOT / "samples/expected/outage.json").read_text())["scenario"]


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle(pilot: Any, app: PcapdnsApp, timeout: float = 30.0) -> None:
    """Wait until the analysis has arrived and every worker (filter, detail) is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while app.analysis is None and app.failure is None:
        if loop.time() > deadline:
            raise TimeoutError("the analysis did not finish")
        await pilot.pause(0.05)
    while True:
        try:
            await app.workers.wait_for_complete()
            break
        except WorkerCancelled:  # an exclusive worker replaced by a newer one: wait for that one
            if loop.time() > deadline:
                raise
            await pilot.pause(0.02)  # (the cancelled one leaves the manager on the next turn)
    await pilot.pause()


async def until(pilot: Any, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``check()`` holds: a key's effects can take more than one idle cycle of the
    app (a message the widget posts to itself, a refresh) on a loaded machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        await pilot.pause(0.02)


def _ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def outage_findings(a: Analysis) -> pl.DataFrame:
    """Two findings as the anomaly engine would report them, from the scenario's known figures
    and the real transactions of samples/outage.pcap (the engine lands on another branch)."""
    out = SCENARIO["outage"]
    t = a.transactions
    servfail = t.filter(pl.col("response_frame").is_in(out["servfail_frames"]))
    unanswered = t.filter(pl.col("query_frame").is_in(out["unanswered_upstream_query_frames"]))
    file = str(t.get_column("file")[0])
    rows = [
        {
            "rank": 1,
            "kind": "servfail_cause",
            "severity": "critical",
            "start": servfail.get_column("ts").min(),
            "end": servfail.get_column("ts").max(),
            "servers": ["10.0.0.53"],
            "clients": servfail.get_column("client").n_unique(),
            "zone": out["zone"],
            "rcode": "SERVFAIL",
            "count": servfail.height,
            "summary": f"{servfail.height} client queries for {out['zone']} got SERVFAIL (EDE 22)",
            "likely_cause": "the authoritative servers of shop.example stopped answering",
            "evidence": [{"file": file, "frame": f} for f in out["servfail_frames"][:3]],
        },
        {
            "rank": 2,
            "kind": "unanswered_outage",
            "severity": "warning",
            "start": _ts(out["first_unanswered_upstream"]),
            "end": _ts(out["last_unanswered_upstream"]),
            "servers": out["servers"],
            "clients": 1,
            "zone": out["zone"],
            "rcode": None,
            "count": unanswered.height,
            "summary": f"{unanswered.height} upstream queries unanswered",
            "likely_cause": "[bold]no route[/bold] to 192.0.2.10/11",  # markup stays literal text
            "evidence": [{"file": file, "frame": f} for f in out["unanswered_upstream_query_frames"][:2]],
        },
    ]
    return pl.DataFrame(rows, schema=ANOMALIES)


class FindingsApp(PcapdnsApp):
    """The real app whose analysis gets :func:`outage_findings` as its anomalies table."""

    def on_analysis_ready(self, message: Any) -> None:
        message.analysis.anomalies = outage_findings(message.analysis)
        message.overview = build_overview(message.analysis, self._chart_columns())
        super().on_analysis_ready(message)


def findings_app() -> FindingsApp:
    return FindingsApp([OUTAGE], Options())


HOSTILE_LABELS = (
    b"\x1b[31mred\x1b[0m",  # an ANSI colour sequence
    b"[bold]evil[/bold]",  # rich markup
    b"bell\x07\x00nul",  # control bytes
    b"\x1b]0;pwned\x07",  # an OSC title-setting sequence
)
HOSTILE_EDE_TEXT = b"\x1b[2J[red]wiped[/red]\x9b"


def write_hostile(path: Path) -> None:
    """Queries and SERVFAIL responses whose names (and EDE text) are hostile."""
    records = []
    ts = 1_709_287_200 * 10**9
    for i, label in enumerate(HOSTILE_LABELS):
        name = labels(label, b"example")
        q = message([question(name)], flags=0x0100, ident=100 + i)
        ede = option(15, b"\x00\x16" + HOSTILE_EDE_TEXT)
        r = message([question(name)], additional=[opt(options=ede)], flags=0x8182, ident=100 + i)
        records.append((ts + i * 10**8, pb.ether(pb.ipv4(pb.udp(q, sport=40000 + i)))))
        reply = pb.ether(pb.ipv4(pb.udp(r, sport=53, dport=40000 + i), src=pb.B4, dst=pb.A4))
        records.append((ts + i * 10**8 + 2 * 10**6, reply))
    path.write_bytes(pb.pcap(records))


_SVG_TEXT = re.compile(
    r'<text[^>]*\bx="([\d.]+)"[^>]*clip-path="url\(#[\w-]+-line-(\d+)\)"[^>]*>(.*?)</text>'
)


def screen_lines(app: PcapdnsApp) -> list[str]:
    """What the terminal shows, line by line (read from the app's SVG screenshot): what a person
    sees without scrolling, nothing more."""
    svg = app.export_screenshot()
    runs: dict[int, list[tuple[float, str]]] = {}
    for x, line, body in _SVG_TEXT.findall(svg):
        runs.setdefault(int(line), []).append((float(x), html.unescape(body).replace("\xa0", " ")))
    height = app.size.height
    lines = ["" for _ in range(height)]
    cell = _cell_width(svg)
    for line, parts in runs.items():
        row = ""
        for x, body in sorted(parts):
            column = round(x / cell)
            row = row.ljust(column) + body
        if line < height:
            lines[line] = row
    return lines


def _cell_width(svg: str) -> float:
    m = re.search(r'<text[^>]*textLength="([\d.]+)"[^>]*>(.*?)</text>', svg)
    assert m, "no text in the screenshot"
    return float(m.group(1)) / len(html.unescape(m.group(2)))


def screen_text(app: PcapdnsApp) -> str:
    return "\n".join(screen_lines(app))
