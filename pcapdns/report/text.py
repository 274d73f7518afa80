"""The terminal report of ``pcapdns analyze``, drawn with rich.

It answers, in this order: can the capture be trusted (quality), how much DNS is in it (totals),
how did servers answer (RCODEs), who did not answer, how fast, which names failed, and which
messages were malformed.  Every string that came from a packet is shown through
:class:`rich.text.Text` (never parsed as markup); names are already in presentation form, where
control bytes are ``\\DDD`` escapes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import polars as pl
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pcapdns.decode.link import linktype_name
from pcapdns.report.findings import findings_table, timeline
from pcapdns.tables.summary import (
    Analysis,
    rcodes_over_time,
    servers,
    summary,
    top_qnames_by_rcode,
    unanswered_by_server,
)

_BAD_RCODES = {"SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"}


def _table(title: str, *columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, title_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return table


class _Fitted:
    """A table whose first column (servers: addresses one copies back into a command) is never
    broken across lines, nor are the figures: when the line is too short for the headers as
    well, the headers wrap, in the room the cells leave them."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        t = self.table
        cells = [max((_cell_len(c) for c in col.cells), default=1) for col in t.columns]
        heads = [len(str(col.header)) for col in t.columns]
        if _room(t, options.max_width) >= sum(map(max, cells, heads)):
            yield t
            return
        narrow = copy.copy(t)  # one space between columns instead of three
        narrow.columns = [copy.copy(col) for col in t.columns]
        narrow.padding = (0, 0, 0, 1)
        spare = _room(narrow, options.max_width) - sum(cells)
        if spare < 0:  # not even the cells fit: rich folds them
            yield t
            return
        widths = list(cells)
        # every header on two lines at most first, then as many on one line as can be
        for goal in ([(h + 1) // 2 for h in heads], heads):
            for i in sorted(range(len(cells)), key=lambda i: goal[i] - widths[i]):
                grant = min(max(goal[i] - widths[i], 0), spare)
                widths[i] += grant
                spare -= grant
        for col, width in zip(narrow.columns, widths, strict=True):
            col.width = width
        yield narrow


def _room(table: Table, width: int) -> int:
    """The cells' room in ``table`` drawn ``width`` wide: less its borders and padding."""
    return width - table._extra_width - sum(table._get_padding_width(i) for i in range(len(table.columns)))


def _cell_len(cell: Any) -> int:
    return cell.cell_len if isinstance(cell, Text) else len(str(cell))


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _pct(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100 * part / whole:.1f}%"


_FILE_ISSUES_SHOWN = 3  # file-level decode issues listed per file and reason


def quality(a: Analysis, s: dict[str, Any]) -> RenderableType:
    lines: list[Text] = []
    for c in a.captures:
        links = ", ".join(f"{linktype_name(lt)}: {n:,}" for lt, n in sorted(c.linktypes.items()))
        others = c.frames - sum(c.linktypes.values())  # numbered as Wireshark does, but no packet
        if others > 0 and c.format == "pcapng":
            links += f"{', ' if links else ''}{others:,} custom or journal block{'s' if others != 1 else ''}"
        links = links or "no frames"
        comp = f", {c.compression}" if c.compression else ""
        counted = f"{c.frames:,} messages" if c.format == "dnstap" else f"{c.frames:,} frames ({links})"
        lines.append(Text.assemble((c.path, "bold"), f"  {c.format}{comp}, {counted}"))
        if c.interface_drops:
            lines.append(
                Text(f"  the capture itself dropped {c.interface_drops:,} packets (pcapng ISB)", "yellow")
            )
    span = s["time_span"]
    if span["first"] is None:
        lines.append(Text("time span: none (no packet or message with a time was read)"))
    else:
        lines.append(Text(f"time span: {span['first']} .. {span['last']}"))
    if s["decode_issues"]:
        detail = ", ".join(f"{k} {v:,}" for k, v in s["decode_issues"].items())
        lines.append(Text(f"decode issues: {detail}", "yellow"))
        # The first few file-level issues of each file and reason, and the first occurrence of each
        # frame-level reason (the decode_issues table has more examples, the counts are above).
        in_file = a.issues.filter(pl.col("frame") == 0)
        shown = (
            in_file.group_by("file_id", "reason", maintain_order=True)
            .head(_FILE_ISSUES_SHOWN)
            .select(in_file.columns)
        )
        firsts = a.issues.filter(pl.col("frame") > 0).unique("reason", keep="first", maintain_order=True)
        for row in pl.concat([shown, firsts]).iter_rows(named=True):
            where = a.files[row["file_id"]] + (f" frame {row['frame']}" if row["frame"] else "")
            lines.append(Text(f"  {where}: {row['reason']}: {row['detail']}", "yellow"))
        if shown.height < in_file.height:
            more = in_file.height - shown.height
            lines.append(Text(f"  ... {more:,} more examples in the decode_issues table", "yellow"))
    else:
        lines.append(Text("decode issues: none", "green"))
    if s["frames"] and not s["dns_messages"]:
        lines.append(
            Text(
                f"no DNS message in {s['frames']:,} frames: none was on the DNS ports analyzed (--port "
                "replaces the default 53: give --port 53 too to keep it) or in a transport pcapdns reads",
                "yellow",
            )
        )
    if s["queries"] and not s["responses"]:
        lines.append(Text("only queries were captured: the capture probably saw one direction", "yellow"))
    elif s["responses"] and not s["queries"]:
        lines.append(Text("only responses were captured: the capture probably saw one direction", "yellow"))
    return Panel(Group(*lines), title="Capture quality", title_align="left", box=box.ROUNDED)


def totals(s: dict[str, Any]) -> RenderableType:
    t = _table("Totals", "", "count", "", right=("count",))
    # Shares are of transactions (a query and its retransmissions are one), as in the server table.
    n_tx = s["answered"] + s["unanswered"]
    rows = [
        ("DNS messages", s["dns_messages"], ", ".join(f"{k} {v:,}" for k, v in s["transports"].items())),
        ("query messages", s["queries"], ""),
        ("  transactions", n_tx, "queries less their retransmissions"),
        ("    answered", s["answered"], _pct(s["answered"], n_tx)),
        (
            "    unanswered (timed out)",
            s["unanswered_by_reason"]["timeout"],
            _pct(s["unanswered_by_reason"]["timeout"], n_tx),
        ),
        (
            "    unanswered (capture ended)",
            s["unanswered_by_reason"]["capture_ended"],
            _pct(s["unanswered_by_reason"]["capture_ended"], n_tx),
        ),
        ("  retransmissions", s["retransmissions"], "the same query again"),
        ("responses", s["responses"], ""),
        ("  duplicate responses", s["duplicate_responses"], ""),
        ("  orphan responses", s["orphan_responses"], "no matching query"),
        ("malformed messages", s["malformed"], ""),
    ]
    for label, n, note in rows:
        t.add_row(label, f"{n:,}", note)
    return t


def rcodes(s: dict[str, Any]) -> RenderableType:
    t = _table("RCODEs (responses)", "rcode", "responses", "share", right=("responses", "share"))
    total = s["responses"]
    for name, n in sorted(s["rcodes"].items(), key=lambda kv: -kv[1]):
        style = "red" if name in _BAD_RCODES else ""
        t.add_row(Text(name, style), f"{n:,}", _pct(n, total))
    return t


def rcode_timeline(a: Analysis, every: str = "1m", limit: int = 60) -> RenderableType:
    """Responses per RCODE per time window: when a failure started and stopped."""
    table = rcodes_over_time(a, every)
    names = [c for c in table.columns if c != "window"]
    order = sorted(names, key=lambda n: (n != "NOERROR", n))
    t = _table(f"RCODEs over time (per {every})", "window (UTC)", *order, right=tuple(order))
    shown = table.head(limit)
    bad = [n for n in names if n in _BAD_RCODES]
    if table.height > limit and bad:
        # Too many windows to list: the ones with the most failing answers, in time order, so an
        # incident late in a long capture is never cut off.
        failing = pl.sum_horizontal(bad)
        shown = table.with_columns(failing.alias("_failing")).top_k(limit, by="_failing").sort("window")
        shown = shown.drop("_failing")
    for row in shown.iter_rows(named=True):
        cells = [Text(f"{row[n]:,}", "red" if n in _BAD_RCODES and row[n] else "") for n in order]
        t.add_row(row["window"].strftime("%Y-%m-%d %H:%M:%S"), *cells)
    if table.height > limit:
        which = "with the most failing answers" if bad else "first"
        every_window = "pcapdns query FILES 'SELECT * FROM windows'"
        t.caption = f"the {limit} of {table.height} windows {which} (all: {every_window})"
    return t


def unanswered(a: Analysis) -> RenderableType:
    t = _table("Unanswered queries by server", "server", "status", "queries", right=("queries",))
    for server, status, n in unanswered_by_server(a).head(15).iter_rows():
        t.add_row(Text(server or "-"), str(status), f"{n:,}")
    return _Fitted(t)


def latency(a: Analysis, s: dict[str, Any]) -> RenderableType:
    t = _table(
        "Latency (ms) and health per server",
        "server",
        "queries",
        "answered",
        "SERVFAIL",
        "p50",
        "p95",
        "max",
        right=("queries", "answered", "SERVFAIL", "p50", "p95", "max"),
    )
    lat = s["latency_ms"]
    t.add_row(
        Text("all", "bold"),
        f"{s['answered'] + s['unanswered']:,}",
        _pct(s["answered"], s["answered"] + s["unanswered"]),
        "",
        _ms(lat["p50"]),
        _ms(lat["p95"]),
        _ms(lat["max"]),
    )
    for row in servers(a).head(15).iter_rows(named=True):
        t.add_row(
            Text(row["server"] or "-"),
            f"{row['queries']:,}",
            f"{row['answer_rate']:.1%}",
            f"{row['servfail']:,}",
            _ms(row["p50_ms"]),
            _ms(row["p95_ms"]),
            _ms(row["max_ms"]),
        )
    t.caption = f"all answers: p99 {_ms(lat['p99'])} ms, min {_ms(lat['min'])} ms, {lat['count']:,} answered"
    return _Fitted(t)


def failing_names(a: Analysis) -> RenderableType:
    t = _table("Top names per non-NOERROR RCODE", "rcode", "qname", "transactions", right=("transactions",))
    for rcode, qname, n in top_qnames_by_rcode(a).iter_rows():
        t.add_row(Text(rcode, "red" if rcode in _BAD_RCODES else ""), Text(qname or "-"), f"{n:,}")
    return t


def malformed(a: Analysis, s: dict[str, Any]) -> RenderableType:
    t = _table(
        "Malformed messages by reason",
        "reason",
        "messages",
        "example (file:frame @offset)",
        right=("messages",),
    )
    examples = a.malformed.group_by("reason", maintain_order=True).first()
    first = {r["reason"]: r for r in examples.iter_rows(named=True)}
    for reason, n in sorted(s["malformed_reasons"].items(), key=lambda kv: -kv[1]):
        ex = first.get(reason)
        where = f"{a.files[ex['file_id']]}:{ex['frame']} @{ex['offset']}" if ex else ""
        t.add_row(reason, f"{n:,}", Text(where))
    return t


def report_console(paths: Sequence[str] = ()) -> Console:
    """The console a report goes to: a terminal's own width; piped or redirected (no terminal, so
    80 columns or ``$COLUMNS``), widened until the longest file name fits on one line, because a
    path broken mid-word cannot be copied back into a command."""
    console = Console()
    if not console.is_terminal:
        longest = max((len(p) for p in paths), default=0)
        console.width = max(console.width, longest + _PATH_MARGIN)
    return console


# what the report puts around a file name on its line: panel borders and padding, an indent
_PATH_MARGIN = 8


def render(a: Analysis, console: Console) -> None:
    for part in sections(a):
        console.print(part)


def sections(a: Analysis) -> list[RenderableType]:
    """The report's parts, in order, computed (printing them is quick: the CLI builds them while
    the progress bar still says so, then prints them)."""
    s = summary(a)
    out: list[RenderableType] = [timeline(a.anomalies)]
    if a.anomalies.height:
        out.append(findings_table(a.anomalies))
    out += [quality(a, s), totals(s)]
    # what the sections below depend on, in one pass over the transactions (read lazily)
    rows, span, failing = a.collect(
        a.scan().select(
            pl.len(),
            pl.col("ts").max() - pl.col("ts").min(),
            (pl.col("rcode_name").is_not_null() & (pl.col("rcode_name") != "NOERROR")).sum(),
        )
    ).row(0)
    if s["rcodes"]:
        out.append(rcodes(s))
        if rows and span > timedelta(minutes=2):
            out.append(rcode_timeline(a))
    if s["unanswered"]:
        out.append(unanswered(a))
    if rows:
        out.append(latency(a, s))
    if failing:
        out.append(failing_names(a))
    if s["malformed"]:
        out.append(malformed(a, s))
    return out


class DomainName:
    """A domain name in a table cell that, when it must wrap, wraps after a dot: between labels, as
    "static.shop." / "example", never inside one ("static.shop.exampl" / "e"), unless one label
    alone is wider than the column."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts = [p + "." for p in name.split(".")[:-1]] + [name.split(".")[-1]]
        self.parts = [p for p in self.parts if p]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max((len(p) for p in self.parts), default=0)
        return Measurement(min(widest, options.max_width), min(len(self.name), options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines: list[str] = []
        for part in self.parts:
            if lines and len(lines[-1]) + len(part) <= options.max_width:
                lines[-1] += part
            else:
                lines.append(part)
        yield Text("\n".join(lines), overflow="fold")


def answers_with_rcode(a: Analysis, rcode: str, limit: int = 20) -> RenderableType:
    """The transactions answered with ``rcode``: who asked what, and the frames to open."""
    matching = a.scan().filter(pl.col("rcode_name").cast(pl.String) == rcode)
    count = a.collect(matching.select(pl.len())).item()
    rows = a.collect(matching.sort("ts").head(limit))  # a top-k: only ``limit`` rows kept
    t = _table(
        f"{count:,} {rcode} answer{'s' if count != 1 else ''} in the capture",
        "time (UTC)",
        "client",
        "server",
        "question",
        "type",
        "frames",
    )
    # The fixed-width columns never wrap, so the name gets the room left and folds only when it
    # alone is wider than that (not "static.shop.exampl / e HTTPS" at 80 columns).
    for col in (t.columns[0], t.columns[4], t.columns[5]):
        col.no_wrap = True
    for r in rows.iter_rows(named=True):
        t.add_row(
            r["ts"].strftime("%H:%M:%S.%f"),
            Text(str(r["client"])),
            Text(str(r["server"])),
            DomainName(r["qname"]) if r["qname"] is not None else Text("(no question)"),
            Text(r["qtype_name"] or ""),
            f"{r['query_frame']}->{r['response_frame']}",
        )
    if count > limit:
        t.caption = f"first {limit} of {count:,}"
    return t
