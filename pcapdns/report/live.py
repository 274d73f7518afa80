"""What ``pcapdns live`` prints: JSON lines (a contract) and a one-line status per interval.

On a terminal the dashboard of :mod:`pcapdns.tui.live` is shown instead; ``--no-tui`` (or output
that is not a terminal) prints one status line per interval on stderr.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pcapdns.live.runner import Tick
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
