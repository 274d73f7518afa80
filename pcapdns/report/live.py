"""What ``pcapdns live`` prints: JSON lines (a contract), a one-line status, a small rich view.

Until the live dashboard lands in the TUI, the terminal view is a compact rich panel redrawn every
interval; ``--no-tui`` prints one status line per interval on stderr instead.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pcapdns.stream import Tick
from pcapdns.tables.summary import iso


def findings_list(findings: pl.DataFrame) -> list[dict[str, Any]]:
    """New findings as plain dicts: what, how bad, since when (onset), where."""
    return [
        {
            "kind": str(r["kind"]),
            "severity": str(r["severity"]),
            "onset": r["start"].isoformat().replace("+00:00", "Z") if r["start"] is not None else None,
            "servers": list(r["servers"] or []),
            "zone": r["zone"],
            "rcode": r["rcode"],
            "count": int(r["count"]),
            "summary": r["summary"],
        }
        for r in findings.iter_rows(named=True)
    ]


def json_line(tick: Tick) -> dict[str, Any]:
    """One ``--json-lines`` object: the ``analyze --json`` keys so far, drops, the last interval."""
    return {
        **tick.summary,
        "dropped": {"kernel": tick.kernel_drops, "queue": tick.queue_drops},
        "queued": tick.queued,
        "interval": {
            "start": iso(tick.start_ns),
            "end": iso(tick.end_ns),
            "queries": tick.queries,
            "responses": tick.responses,
            "unanswered": tick.unanswered,
        },
        "findings": findings_list(tick.findings),
        "final": tick.final,
    }


def status_line(tick: Tick) -> str:
    s = tick.summary
    lat = s["latency_ms"]
    p95 = f"{lat['p95']:.1f} ms" if lat["p95"] is not None else "-"
    return (
        f"{iso(tick.end_ns)}  +{tick.queries} queries +{tick.responses} responses "
        f"+{tick.unanswered} unanswered | total {s['queries']} queries, {s['answered']} answered, "
        f"{s['unanswered']} unanswered, p95 {p95} | dropped {tick.kernel_drops + tick.queue_drops}"
    )


def finding_lines(findings: pl.DataFrame) -> list[str]:
    return [
        f"finding: {f['severity']} {f['kind']} since {f['onset']}: {f['summary']}"
        for f in findings_list(findings)
    ]


def view(tick: Tick, recent: list[str], interface: str) -> RenderableType:
    """The small live panel: totals, RCODEs, latency, drops and the latest findings."""
    s = tick.summary
    lat = s["latency_ms"]
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(f"pcapdns live on {interface}", style="bold"),
        Text(f"{s['queries']:,} queries  {s['answered']:,} answered  {s['unanswered']:,} unanswered"),
        Text(
            f"dropped: kernel {tick.kernel_drops:,}  queue {tick.queue_drops:,}",
            style="red" if tick.kernel_drops + tick.queue_drops else "green",
        ),
    )
    rcodes = Table("RCODE", "responses", box=None)
    for name, n in sorted(s["rcodes"].items(), key=lambda kv: -kv[1])[:6]:
        rcodes.add_row(escape(name), f"{n:,}")
    latency = Table("latency", "ms", box=None)
    for key in ("p50", "p95", "p99", "max"):
        latency.add_row(key, "-" if lat[key] is None else f"{lat[key]:.2f}")
    body = Table.grid(padding=(0, 4))
    body.add_row(rcodes, latency)
    shown = [Text(line) for line in recent[-5:]] or [Text("no findings", style="dim")]
    return Group(head, body, *shown)
