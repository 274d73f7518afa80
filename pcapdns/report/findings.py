"""The anomaly engine's findings for people (rich) and for tools (the ``anomalies --json`` contract).

The JSON contract: a list, one object per finding in rank order, with exactly the keys of
:data:`JSON_KEYS`; times are ISO 8601 UTC, frame numbers 1-based as in Wireshark.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.text import Text

from pcapdns.dns.knowledge import RcodeInfo

JSON_KEYS = (
    "kind",
    "severity",
    "start",
    "end",
    "servers",
    "clients",
    "zone",
    "rcode",
    "count",
    "summary",
    "likely_cause",
    "evidence",
    "score",
    "top_clients",
    "subnets",
    "explained_by",
)
_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def findings_json(anomalies: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in anomalies.sort("rank").iter_rows(named=True):
        item = {k: row[k] for k in JSON_KEYS}
        item["kind"], item["severity"] = str(row["kind"]), str(row["severity"])
        item["start"], item["end"] = _iso(row["start"]), _iso(row["end"])
        item["servers"] = list(row["servers"] or [])
        item["evidence"] = [{"file": e["file"], "frame": int(e["frame"])} for e in row["evidence"] or []]
        item["top_clients"] = [
            {"client": c["client"], "count": int(c["count"])} for c in row["top_clients"] or []
        ]
        item["subnets"] = [
            {"subnet": n["subnet"], "clients": int(n["clients"]), "count": int(n["count"])}
            for n in row["subnets"] or []
        ]
        out.append(item)
    return out


def _frames(evidence: list[dict[str, Any]] | None) -> str:
    return ", ".join(str(e["frame"]) for e in evidence or [])


def for_whom(row: dict[str, Any]) -> str:
    """Who was hurt, as the report says it: the most affected clients, or their networks when many."""
    nets = row["subnets"] or []
    if len(nets) == 1:
        n = nets[0]
        return f"{n['clients']} clients, all in {n['subnet']} ({n['count']} affected)"
    if nets:
        text = ", ".join(f"{n['subnet']} ({n['clients']} clients, {n['count']} affected)" for n in nets[:5])
        more = f" and {len(nets) - 5} more networks" if len(nets) > 5 else ""
        return f"{row['clients']} clients; most in {text}{more}"
    return ", ".join(f"{c['client']} ({c['count']})" for c in row["top_clients"] or [])


def timeline(anomalies: pl.DataFrame) -> RenderableType:
    """The incident timeline: every finding that is not just informational, in time order, one
    line each pointing at its ranked entry below (which says what happened, once); a symptom is
    indented under the cause that explains it."""
    rows = anomalies.filter(pl.col("severity") != "info")
    if rows.height == 0:
        quiet = anomalies.height and "only informational findings (below)" or "no anomaly found"
        return Panel(Text(quiet, "green"), title="Incident timeline", title_align="left", box=box.ROUNDED)
    lines = []
    shown = set(rows.get_column("rank").to_list())
    cause = dict(
        zip(rows.get_column("rank").to_list(), rows.get_column("explained_by").to_list(), strict=True)
    )
    start = dict(zip(rows.get_column("rank").to_list(), rows.get_column("start").to_list(), strict=True))

    def root(rank: int) -> int:
        while cause.get(rank) in shown:
            rank = cause[rank]
        return rank

    never = datetime.max.replace(tzinfo=UTC)
    # incidents in time order, each cause followed by the symptoms it explains (in rank order)
    order = sorted(
        rows.iter_rows(named=True),
        key=lambda r: (start[root(r["rank"])] or never, root(r["rank"]), r["rank"]),
    )
    for r in order:
        when = "--:--:--" if r["start"] is None else r["start"].strftime("%H:%M:%S")
        until = "" if r["end"] is None else r["end"].strftime("-%H:%M:%S")
        under = r["explained_by"] is not None and r["explained_by"] in shown
        what = ", ".join(r["servers"][:3]) + (" ..." if len(r["servers"]) > 3 else "")
        about = " ".join(x for x in (r["rcode"], f"for {r['zone']}" if r["zone"] else None) if x)
        lines.append(
            Text.assemble(
                (f"{when}{until:9} ", "bold"),
                (f"{str(r['severity']):8} ", _STYLE[str(r["severity"])]),
                ("  └ " if under else "", "dim"),
                (f"#{r['rank']} {r['kind']}", "bold"),
                Text(f"  {what}" if what else ""),
                Text(f"  {about}" if about else ""),
                (f"  (from #{r['explained_by']})" if under else "", "dim"),
            )
        )
    return Panel(Group(*lines), title="Incident timeline", title_align="left", box=box.ROUNDED)


def findings_table(anomalies: pl.DataFrame, *, causes: bool = True) -> RenderableType:
    """The ranked findings, one block each: what, likely cause, and the frames to open."""
    blocks: list[RenderableType] = []
    for r in anomalies.sort("rank").iter_rows(named=True):
        sev = str(r["severity"])
        when = ""
        if r["start"] is not None:
            when = r["start"].strftime("%Y-%m-%d %H:%M:%S")
            if r["end"] is not None and r["end"] != r["start"]:
                when += r["end"].strftime(" .. %H:%M:%S")
        head = Text.assemble(
            (f"#{r['rank']} ", "bold"), (sev, _STYLE[sev]), " ", (str(r["kind"]), "bold"), f"  {when}"
        )
        if r["servers"]:
            head.append("  servers: ")
            head.append(Text(", ".join(r["servers"][:6]) + (" ..." if len(r["servers"]) > 6 else "")))
        if r["explained_by"] is not None:
            head.append(f"  (explained by #{r['explained_by']})", "dim")
        if r["score"] is not None:
            head.append(f"  score {r['score']:.1f}", "dim")
        lines: list[RenderableType] = [head, Padding(Text(r["summary"]), (0, 0, 0, 3))]
        whom = for_whom(r)
        if whom:
            lines.append(Padding(Text.assemble(("for whom: ", "italic"), Text(whom)), (0, 0, 0, 3)))
        if causes:
            cause = Text.assemble(("likely cause: ", "italic"), Text(r["likely_cause"]))
            lines.append(Padding(cause, (0, 0, 0, 3)))
        if r["evidence"]:
            files = {e["file"] for e in r["evidence"]}
            where = f" in {next(iter(files))}" if len(files) == 1 else ""
            frames = "frame" if len(r["evidence"]) == 1 else "frames"
            evidence = Text(f"evidence: {frames} {_frames(r['evidence'])}{where}", "dim")
            lines.append(Padding(evidence, (0, 0, 0, 3)))
        blocks.append(Group(*lines))
        blocks.append(Text(""))
    if not blocks:
        blocks.append(Text("no anomaly found", "green"))
    return Panel(Group(*blocks), title="Findings (ranked)", title_align="left", box=box.ROUNDED)


def explain_panel(info: RcodeInfo) -> RenderableType:
    body: list[RenderableType] = [Text(info.meaning), Text("")]
    body.append(Text("Usual causes", "bold"))
    body.extend(Text(f"  - {c}") for c in info.causes)
    body.append(Text(""))
    body.append(Text("How to check", "bold"))
    body.extend(Text(f"  $ {c}" if not c[0].isupper() else f"  - {c}") for c in info.checks)
    return Panel(
        Group(*body),
        title=f"{info.name} (RCODE {info.value}, {info.rfc})",
        title_align="left",
        box=box.ROUNDED,
    )
