"""The overview: capture quality, queries per second by outcome, latency over time, incidents, top lists."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from pcapdns.tui.chart import AXIS, Chart, ChartData, Series, bucket_x
from pcapdns.tui.data import OUTCOMES, Health, Overview
from pcapdns.tui.safe import text

OUTCOME_COLORS = {
    "NOERROR": "#5fb760",
    "NXDOMAIN": "#e5c07b",
    "SERVFAIL": "#e5484d",
    "other": "#61afef",
    "unanswered": "#b48ead",
}
LATENCY_SERIES = (Series("p50", "#5fb760"), Series("p95", "#e5c07b"), Series("p99", "#e5484d"))
SEVERITY_COLORS = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_LOG_LO, _LOG_HI = 0.1, 10_000.0  # latency axis: 0.1 ms .. 10 s


def clock(us: int, bucket_us: int) -> str:
    stamp = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return stamp.strftime("%H:%M:%S" if bucket_us < 60_000_000 else "%H:%M")


def _nice_ceiling(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    return float(next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= v))


def qps_chart(ov: Overview) -> ChartData:
    series = [Series(name, OUTCOME_COLORS[name]) for name in OUTCOMES]
    totals = [sum(ov.qps[name][b] for name in OUTCOMES) for b in range(ov.buckets)]
    top = _nice_ceiling(max(totals, default=0.0))
    columns: list[list[float] | None] = []
    for b in range(ov.buckets):
        acc, col = 0.0, []
        for name in OUTCOMES:
            acc += ov.qps[name][b]
            col.append(acc / top)
        columns.append(col)
    labels = [(1.0, f"{top:g}"), (0.5, f"{top / 2:g}"), (0.0, "0")]
    return ChartData(series, columns, labels, ov.start_us, ov.bucket_us)


def _log_height(ms: float) -> float:
    ms = min(max(ms, _LOG_LO), _LOG_HI)
    return (math.log10(ms) - math.log10(_LOG_LO)) / (math.log10(_LOG_HI) - math.log10(_LOG_LO))


def latency_chart(ov: Overview) -> ChartData:
    columns = [None if p is None else [_log_height(v) for v in p] for p in ov.latency]
    labels = [(_log_height(v), label) for v, label in ((10_000, "10s"), (100, "100ms"), (1, "1ms"))]
    return ChartData(LATENCY_SERIES, columns, labels, ov.start_us, ov.bucket_us)


def legend(series: list[Series] | tuple[Series, ...], title: str) -> Text:
    out = Text(title, style="bold")
    out.append("  ")
    for s in series:
        out.append("■ ", style=s.color)
        out.append(s.name + "  ")
    out.rstrip()
    return out


def timeline(ov: Overview, width: int) -> Text:
    """Each finding as a bar on the chart's time axis, with its rank, kind and summary."""
    out = Text()
    if not ov.incidents:
        out.append("Incidents  ", style="bold")
        out.append("no findings", style="dim")
        return out
    out.append("Incidents\n", style="bold")
    plot = width - AXIS
    for inc in ov.incidents[:6]:
        first = max(0, (inc.start_us - ov.start_us) // ov.bucket_us)
        last = min(ov.buckets - 1, max(first, (inc.end_us - ov.start_us) // ov.bucket_us))
        style = SEVERITY_COLORS.get(inc.severity, "")
        line = Text(f"#{inc.rank:<{AXIS - 2}} ", style=style)
        x0, x1 = bucket_x(first, plot, ov.buckets), bucket_x(last + 1, plot, ov.buckets)
        line.append(" " * x0)
        line.append("━" * max(1, x1 - x0), style=style)
        line.append(" ")
        line.append(text(f"{inc.kind}: {inc.summary}", style))
        line.truncate(width, overflow="ellipsis")  # one line per finding; the Findings view has it all
        out.append(line)
        out.append("\n")
    out.rstrip()
    return out


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        title_style="bold",
        expand=True,
        padding=(0, 0, 0, 1),
    )


def _counts_table(title: str, rows: list[tuple[str, int]], colors: dict[str, str]) -> Table:
    t = _table(title)
    t.add_column("", no_wrap=True, min_width=9)
    t.add_column("count", justify="right", no_wrap=True)
    for name, n in rows[:6]:
        t.add_row(text(name, colors.get(name, "")), f"{n:,}")
    return t


def _health_table(title: str, rows: list[Health]) -> Table:
    t = _table(title)
    # the address gives way first (ellipsis); the number columns never wrap nor shrink
    t.add_column("", no_wrap=True, overflow="ellipsis", min_width=6, ratio=1)
    t.add_column("queries", justify="right", no_wrap=True)
    t.add_column("ans", justify="right", no_wrap=True)
    t.add_column("p95 ms", justify="right", no_wrap=True)
    for h in rows:
        rate = f"{100 * h.answer_rate:.1f}%"
        style = "red" if h.answer_rate < 0.9 else "yellow" if h.answer_rate < 0.99 else ""
        p95 = "-" if h.p95_ms is None else f"{h.p95_ms:,.1f}"
        t.add_row(text(h.who), f"{h.queries:,}", Text(rate, style=style), p95)
    return t


class OverviewView(VerticalScroll):
    """Everything at a glance; the charts' cursor zooms into the transactions of a time range."""

    # Below this width the four breakdown tables go two by two (their number columns stay whole).
    STACK_BELOW = 120

    def compose(self) -> ComposeResult:
        # What matters first comes first: at 80x24 the quality line and the incidents show
        # without scrolling, the charts follow.
        yield Static(Text("analyzing…", style="italic"), id="quality")
        yield Static(id="timeline")
        yield Static(legend([Series(n, OUTCOME_COLORS[n]) for n in OUTCOMES], "Queries/s"))
        yield Chart(id="qps")
        yield Static(legend(LATENCY_SERIES, "Latency (log scale)"))
        yield Chart(id="latency")
        with Horizontal(id="breakdowns"):
            yield Static(id="rcodes", classes="box narrow")
            yield Static(id="qtypes", classes="box narrow")
            yield Static(id="servers", classes="box wide")
            yield Static(id="clients", classes="box wide")

    def on_resize(self) -> None:
        self.query_one("#breakdowns").set_class(self.size.width < self.STACK_BELOW, "-stacked")
        if getattr(self, "overview", None) is not None:
            self.query_one("#timeline", Static).update(timeline(self.overview, self.size.width - 2))

    def failed(self, line: str) -> None:
        self.query_one("#quality", Static).update(text(line, "italic"))

    def chart_columns(self) -> int:
        """How many time buckets fit the charts at the current width."""
        return max(10, self.size.width - AXIS - 2)

    def show(self, ov: Overview) -> None:
        self.overview = ov
        self.query_one("#quality", Static).update(Text.assemble(*((text(s, st)) for s, st in ov.quality)))
        self.query_one("#qps", Chart).set_data(qps_chart(ov))
        self.query_one("#latency", Chart).set_data(latency_chart(ov))
        self.query_one("#timeline", Static).update(timeline(ov, self.size.width - 2))
        self.query_one("#rcodes", Static).update(_counts_table("RCODEs", ov.rcodes, OUTCOME_COLORS))
        self.query_one("#qtypes", Static).update(_counts_table("Query types", ov.qtypes, {}))
        self.query_one("#servers", Static).update(_health_table("Top servers", ov.servers))
        self.query_one("#clients", Static).update(_health_table("Top clients", ov.clients))
