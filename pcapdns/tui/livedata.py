"""What the live dashboard shows, folded from :class:`~pcapdns.live.runner.Tick` s with bounded memory.

:class:`LiveModel` runs in the runner's thread: every tick it reduces the interval to a few numbers
(responses per RCODE, unanswered, latency percentiles of the transactions settled in it) and to
small aggregates (per server, per failing name), keeps them in rolling windows with caps, and
returns an immutable :class:`Snapshot` for the UI thread to draw.  Nothing per transaction is kept:
a tick's ``settled`` frame is aggregated by polars and let go.  No textual here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import polars as pl

from pcapdns.live.runner import Tick
from pcapdns.report.live import findings_list

FAILING = ("SERVFAIL", "NXDOMAIN", "REFUSED")  # shown first; any other non-NOERROR RCODE follows
RATE_SERIES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "other", "unanswered")


@dataclass(frozen=True, slots=True)
class Point:
    """One interval: responses per second by outcome, latency percentiles (ms) of what settled."""

    bucket: int  # end time // interval
    seconds: float  # how long the interval lasted
    rates: tuple[float, ...]  # per RATE_SERIES, per second
    latency: tuple[float, float, float] | None  # p50, p95, p99 in ms; None when nothing settled


@dataclass(frozen=True, slots=True)
class ServerRow:
    server: str
    queries: int
    unanswered: int

    @property
    def rate(self) -> float:
        return self.unanswered / self.queries if self.queries else 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    interface: str
    end_ns: int
    started_ns: int
    interval_ns: int
    final: bool
    frames: int
    dns_messages: int
    malformed: int
    queries: int
    answered: int
    unanswered: int
    kernel_drops: int
    queue_drops: int
    queued: int
    latency_ms: dict[str, float | None]
    points: tuple[Point, ...]
    servers: tuple[ServerRow, ...]
    failing: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # (RCODE, ((name, count), ...))
    new_findings: tuple[dict[str, Any], ...]


_SERVER_SCHEMA = {"server": pl.String(), "queries": pl.UInt64(), "unanswered": pl.UInt64()}
_NAME_SCHEMA = {"rcode_name": pl.String(), "qname": pl.String(), "n": pl.UInt64()}


class LiveModel:
    """Rolling state of the dashboard: ``points`` ticks of history, tables over ``window_s``."""

    def __init__(
        self,
        interface: str,
        interval_s: float,
        *,
        points: int = 600,
        window_s: float = 300.0,
        per_tick_rows: int = 200,
        shown: int = 8,
    ) -> None:
        self.interface = interface
        self.interval_ns = max(1, int(interval_s * 1e9))
        self.window_ns = int(window_s * 1e9)
        self.per_tick_rows = per_tick_rows  # of each tick's aggregates, only this many are kept
        self.shown = shown
        self.points: deque[Point] = deque(maxlen=points)
        cap = max(1, int(window_s / max(interval_s, 1e-3)) + 1)
        self.servers: deque[tuple[int, pl.DataFrame]] = deque(maxlen=cap)
        self.names: deque[tuple[int, pl.DataFrame]] = deque(maxlen=cap)
        self.started_ns: int | None = None
        self._rcodes: dict[str, int] = {}

    def add(self, tick: Tick) -> Snapshot:
        if self.started_ns is None:
            self.started_ns = tick.start_ns
        s = tick.summary
        responses = {k: v - self._rcodes.get(k, 0) for k, v in s["rcodes"].items()}
        self._rcodes = dict(s["rcodes"])
        seconds = max((tick.end_ns - tick.start_ns) / 1e9, 1e-9)
        other = sum(v for k, v in responses.items() if k not in ("NOERROR", "NXDOMAIN", "SERVFAIL"))
        counts = [responses.get("NOERROR", 0), responses.get("NXDOMAIN", 0), responses.get("SERVFAIL", 0)]
        rates = tuple(n / seconds for n in [*counts, other, tick.unanswered])
        settled = tick.settled
        latency = None
        if settled.height and "rtt" in settled.columns:
            q = settled.select(
                (pl.col("rtt").quantile(p, "linear") * 1000).alias(str(p)) for p in (0.5, 0.95, 0.99)
            ).row(0)
            if q[0] is not None:
                latency = (float(q[0]), float(q[1]), float(q[2]))
        self.points.append(Point(tick.end_ns // self.interval_ns, seconds, rates, latency))
        if settled.height and "server" in settled.columns:
            self._aggregate(tick.end_ns, settled)
        oldest = tick.end_ns - self.window_ns
        for rolling in (self.servers, self.names):
            while rolling and rolling[0][0] < oldest:
                rolling.popleft()
        lat = s["latency_ms"]
        return Snapshot(
            interface=self.interface,
            end_ns=tick.end_ns,
            started_ns=self.started_ns,
            interval_ns=self.interval_ns,
            final=tick.final,
            frames=int(s["frames"]),
            dns_messages=int(s["dns_messages"]),
            malformed=int(s["malformed"]),
            queries=int(s["queries"]),
            answered=int(s["answered"]),
            unanswered=int(s["unanswered"]),
            kernel_drops=tick.kernel_drops,
            queue_drops=tick.queue_drops,
            queued=tick.queued,
            latency_ms={k: lat[k] for k in ("p50", "p95", "p99", "max")},
            points=tuple(self.points),
            servers=self._server_rows(),
            failing=self._failing(),
            new_findings=tuple(findings_list(tick.findings)),
        )

    def _aggregate(self, end_ns: int, settled: pl.DataFrame) -> None:
        per_server = (
            settled.group_by(pl.col("server").cast(pl.String))
            .agg(
                pl.len().cast(pl.UInt64).alias("queries"),
                (pl.col("status") == "unanswered").sum().cast(pl.UInt64).alias("unanswered"),
            )
            .sort("unanswered", "queries", descending=True)
            .head(self.per_tick_rows)
        )
        self.servers.append((end_ns, per_server.select(list(_SERVER_SCHEMA))))
        names = (
            settled.filter(pl.col("rcode_name").is_not_null() & (pl.col("rcode_name") != "NOERROR"))
            .group_by(pl.col("rcode_name").cast(pl.String), "qname")
            .agg(pl.len().cast(pl.UInt64).alias("n"))
            .sort("n", descending=True)
            .head(self.per_tick_rows)
        )
        if names.height:
            self.names.append((end_ns, names.select(list(_NAME_SCHEMA))))

    def _server_rows(self) -> tuple[ServerRow, ...]:
        if not self.servers:
            return ()
        rows = (
            pl.concat([df for _, df in self.servers])
            .group_by("server")
            .agg(pl.col("queries").sum(), pl.col("unanswered").sum())
            .with_columns((pl.col("unanswered") / pl.col("queries")).alias("rate"))
            .sort(["rate", "queries", "server"], descending=[True, True, False])
            .head(self.shown)
        )
        return tuple(ServerRow(s, int(q), int(u)) for s, q, u, _ in rows.iter_rows())

    def _failing(self) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
        if not self.names:
            return ()
        top = (
            pl.concat([df for _, df in self.names])
            .group_by("rcode_name", "qname")
            .agg(pl.col("n").sum())
            .sort(["n", "qname"], descending=[True, False])
        )
        out = []
        for (rcode,), group in top.group_by("rcode_name", maintain_order=True):
            rows = tuple((str(q), int(n)) for q, n in group.head(5).select("qname", "n").iter_rows())
            out.append((str(rcode), rows, int(group.get_column("n").sum())))
        order = {r: i for i, r in enumerate(FAILING)}
        out.sort(key=lambda t: (order.get(t[0], len(FAILING)), -t[2]))
        return tuple((rcode, rows) for rcode, rows, _ in out)
