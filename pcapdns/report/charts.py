"""The charts of the incident report: their data (from the transactions) and their Vega-Lite specs.

Vega-Lite through altair: a chart is a JSON spec that carries its own data, so the HTML report
embeds it as data (tests read the figures back out of the page) and draws it with the Vega
libraries inlined in the page; ``vl-convert`` draws the same spec to PNG without a browser.

Every chart counts *transactions* (a query and its answer, or its lack of one), by the window of
the query's time; windows are the anomaly engine's (``--window``), widened to a whole multiple of
it when the capture is too long for :data:`MAX_WINDOWS` of them.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from pcapdns.tables.summary import PERCENTILES, Analysis
from pcapdns.tables.windows import duration

MAX_WINDOWS = 500  # points per series: enough to see an incident's shape, few enough to draw at once
TOP_SERVERS = 15
# RCODEs that mean trouble first (red shades), then the rest; unknown names get a grey
_COLOURS = {
    "NOERROR": "#4c78a8",
    "NXDOMAIN": "#9ecae9",
    "SERVFAIL": "#e45756",
    "REFUSED": "#f58518",
    "FORMERR": "#b279a2",
    "NOTIMP": "#ff9da6",
    "unanswered": "#000000",
    "capture_ended": "#bab0ac",
}
_PERCENTILE_COLOURS = {"p50": "#4c78a8", "p95": "#f58518", "p99": "#e45756"}
_WIDTH = 760


@dataclass(frozen=True, slots=True)
class Chart:
    name: str  # file name stem of its PNG, and its element id in the page
    title: str
    description: str  # one sentence under the title: what is counted and how
    spec: dict[str, Any]  # Vega-Lite, data inline


def window_for(a: Analysis, window_s: float) -> float:
    """``window_s``, or the smallest whole multiple of it that keeps the capture in MAX_WINDOWS windows."""
    span_us = a.collect(
        a.scan().select((pl.col("ts").max() - pl.col("ts").min()).dt.total_microseconds())
    ).item()
    if span_us is None:  # no transaction
        return window_s
    span_s = float(span_us) / 1e6
    return window_s * max(1, math.ceil(span_s / window_s / MAX_WINDOWS))


def _outcome() -> pl.Expr:
    """A transaction's outcome: its RCODE name when answered, else its status."""
    return (
        pl.when(pl.col("status") == "answered")
        .then(pl.col("rcode_name").cast(pl.String))
        .otherwise(pl.col("status").cast(pl.String))
        .alias("outcome")
    )


def _iso(column: str) -> pl.Expr:
    return pl.col(column).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")


def outcomes_over_time(a: Analysis, window_s: float) -> pl.DataFrame:
    """Transactions per window and outcome.

    Columns ``window``, ``window_end`` (ISO 8601 UTC), ``outcome``, ``count`` and ``per_s``.
    """
    every = duration(window_s)
    counted = a.collect(
        a.scan()
        .select(pl.col("ts").dt.truncate(every).alias("window"), _outcome())
        .group_by("window", "outcome")
        .len("count")
    )
    return counted.sort("window", "outcome").select(
        _iso("window").alias("window"),
        pl.col("window")
        .dt.offset_by(every)
        .pipe(lambda c: c.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
        .alias("window_end"),
        "outcome",
        pl.col("count").cast(pl.Int64),
        (pl.col("count") / window_s).round(6).alias("per_s"),
    )


def latency_over_time(a: Analysis, window_s: float) -> pl.DataFrame:
    """Latency percentiles of the answers per window: ``window``, ``percentile``, ``ms``, ``answers``."""
    every = duration(window_s)
    ms = pl.col("rtt") * 1000
    wide = a.collect(
        a.scan()
        .select(pl.col("ts").dt.truncate(every).alias("window"), "rtt")
        .drop_nulls("rtt")
        .group_by("window")
        .agg(
            pl.len().alias("answers"),
            *[ms.quantile(q, interpolation="linear").round(3).alias(name) for name, q in PERCENTILES],
        )
        .sort("window")
    )
    return (
        wide.unpivot(
            index=["window", "answers"],
            on=[n for n, _ in PERCENTILES],
            variable_name="percentile",
            value_name="ms",
        )
        .select(_iso("window").alias("window"), "percentile", "ms", pl.col("answers").cast(pl.Int64))
        .sort("window", "percentile")
    )


def outcomes_by_server(a: Analysis, top: int = TOP_SERVERS) -> pl.DataFrame:
    """Transactions per server and outcome, ``top`` busiest servers: ``server``, ``outcome``, ``count``."""
    # counted per (server, outcome) first: a few rows per server, whatever the table's size
    counted = a.collect(
        a.scan()
        .select(pl.col("server").cast(pl.String).fill_null("-"), _outcome())
        .group_by("server", "outcome")
        .len("count")
    )
    busiest = (
        counted.group_by("server")
        .agg(pl.col("count").sum().alias("len"))
        .sort(["len", "server"], descending=[True, False])
        .head(top)
    )
    return (
        counted.join(busiest.select("server"), on="server", how="semi")
        .select("server", "outcome", pl.col("count").cast(pl.Int64))
        .sort("server", "outcome")
    )


def _order(outcomes: list[str]) -> list[str]:
    known = [o for o in _COLOURS if o in outcomes]
    return known + sorted(o for o in outcomes if o not in _COLOURS)


def _colour(outcomes: list[str]) -> alt.Color:
    order = _order(outcomes)
    scale = alt.Scale(domain=order, range=[_COLOURS.get(o, "#79706e") for o in order])
    return alt.Color("outcome:N", scale=scale, sort=order, title="outcome")


def _x_time() -> alt.X:
    return alt.X("utcyearmonthdatehoursminutesseconds(window):T", title="window start (UTC)")


def _inline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"values": rows}


def _spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    # The charts are small aggregates (MAX_WINDOWS windows x a few outcomes): no row limit applies.
    with alt.data_transformers.enable("default", max_rows=None):
        return chart.to_dict()  # type: ignore[no-any-return]


def rate_chart(rows: pl.DataFrame, window_s: float) -> Chart:
    outcomes = rows.get_column("outcome").unique().to_list()
    chart = (
        alt.Chart(_inline(rows.to_dicts()))
        .mark_bar()
        .encode(
            x=alt.X("window:T", bin="binned", title="window start (UTC)", scale=alt.Scale(type="utc")),
            x2="window_end:T",
            y=alt.Y("per_s:Q", stack="zero", title="queries/s"),
            color=_colour(outcomes),
            tooltip=[
                alt.Tooltip("utcyearmonthdatehoursminutesseconds(window):T", title="window (UTC)"),
                alt.Tooltip("outcome:N"),
                alt.Tooltip("count:Q", title="queries"),
                alt.Tooltip("per_s:Q", title="queries/s", format=".2f"),
            ],
        )
        .properties(width=_WIDTH, height=260)
    )
    return Chart(
        "queries_by_rcode",
        "Queries per second by RCODE",
        f"Transactions per {_seconds(window_s)} window by the RCODE of their answer (or unanswered), "
        "divided by the window's length; stacked.",
        _spec(chart),
    )


def latency_chart(rows: pl.DataFrame, overall: dict[str, Any], window_s: float) -> Chart:
    lines = (
        alt.Chart(_inline(rows.to_dicts()))
        .mark_line(point=True)
        .encode(
            x=_x_time(),
            y=alt.Y("ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
            color=alt.Color(
                "percentile:N",
                scale=alt.Scale(domain=list(_PERCENTILE_COLOURS), range=list(_PERCENTILE_COLOURS.values())),
                title="percentile",
            ),
            tooltip=[
                alt.Tooltip("utcyearmonthdatehoursminutesseconds(window):T", title="window (UTC)"),
                alt.Tooltip("percentile:N"),
                alt.Tooltip("ms:Q", title="ms", format=",.1f"),
                alt.Tooltip("answers:Q"),
            ],
        )
    )
    # The whole capture's percentiles (those of `analyze --json`) as dashed rules
    marks = [
        {"percentile": name, "ms": overall[name]} for name, _ in PERCENTILES if overall[name] is not None
    ]
    rules = (
        alt.Chart(_inline(marks))
        .mark_rule(strokeDash=[4, 4], opacity=0.6)
        .encode(
            y="ms:Q",
            color=alt.Color("percentile:N", legend=None),
            tooltip=[alt.Tooltip("percentile:N", title="whole capture"), alt.Tooltip("ms:Q", format=",.1f")],
        )
    )
    chart = alt.layer(lines, rules).properties(width=_WIDTH, height=260)
    return Chart(
        "latency_percentiles",
        "Latency percentiles over time",
        f"p50, p95 and p99 of query-to-answer time per {_seconds(window_s)} window (answered queries "
        "only), on a log scale; the dashed lines are the whole capture's percentiles.",
        _spec(chart),
    )


def server_chart(rows: pl.DataFrame) -> Chart:
    outcomes = rows.get_column("outcome").unique().to_list()
    chart = (
        alt.Chart(_inline(rows.to_dicts()))
        .mark_bar()
        .encode(
            y=alt.Y(
                "server:N", sort=alt.EncodingSortField("count", op="sum", order="descending"), title=None
            ),
            x=alt.X(
                "sum(count):Q", stack="normalize", title="share of its queries", axis=alt.Axis(format="%")
            ),
            color=_colour(outcomes),
            tooltip=["server:N", "outcome:N", alt.Tooltip("sum(count):Q", title="queries")],
        )
        .properties(width=_WIDTH - 160)
    )
    return Chart(
        "server_health",
        "Outcome of the queries per server",
        f"The share of each outcome among the queries sent to each server (the {TOP_SERVERS} busiest).",
        _spec(chart),
    )


def _seconds(s: float) -> str:
    return f"{s:g} s"


def charts(a: Analysis, overall_latency: dict[str, Any], window_s: float) -> list[Chart]:
    """The report's charts; none when the capture holds no transaction."""
    if a.collect(a.scan().select(pl.len())).item() == 0:
        return []
    w = window_for(a, window_s)
    out = [rate_chart(outcomes_over_time(a, w), w)]
    latency = latency_over_time(a, w)
    if latency.height:
        out.append(latency_chart(latency, overall_latency, w))
    out.append(server_chart(outcomes_by_server(a)))
    return out


def vegalite_version() -> str | None:
    """The Vega-Lite version altair writes specs for, as ``vl-convert`` names it (e.g. ``6.4``)."""
    import vl_convert

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vl_convert.get_vegalite_versions() else None


def to_png(chart: Chart, scale: float = 2.0) -> bytes:
    """The chart drawn to PNG (no browser: vl-convert's own Vega runtime)."""
    import vl_convert

    return vl_convert.vegalite_to_png(chart.spec, vl_version=vegalite_version(), scale=scale)  # type: ignore[no-any-return]


def javascript() -> str:
    """Vega, Vega-Lite and Vega-Embed in one script (globals ``vega``, ``vegaLite``, ``vegaEmbed``).

    vl-convert bundles them on demand (about 2 s); the bundle is kept in the user's cache
    directory, one file per vl-convert and Vega-Lite version, written atomically.  A cache that
    cannot be read or written is only a slower run.
    """
    import vl_convert

    version = vegalite_version()
    path = _cache_dir() / f"vega-bundle-{metadata.version('vl-convert-python')}-{version or 'default'}.js"
    try:
        cached = path.read_text(encoding="utf-8")
        if _BUNDLE_END in cached[-400:]:  # whole, as vl-convert made it
            return cached
    except (OSError, UnicodeDecodeError):
        pass
    bundle: str = vl_convert.javascript_bundle(vl_version=version)  # type: ignore[call-arg]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(bundle)
        os.replace(tmp, path)
    except OSError:
        pass
    return bundle


# How vl-convert's default bundle ends: it makes the three libraries globals.
_BUNDLE_END = "window.vegaEmbed="


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcapdns"
