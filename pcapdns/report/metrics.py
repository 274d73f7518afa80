"""``--metrics [HOST]:PORT``: the stream's running totals in Prometheus text format.

A custom collector reads the totals when Prometheus scrapes (nothing is counted twice, nothing per
packet happens here).  Per-server counts come from settled transactions, capped at
``MAX_SERVERS`` label values (the rest add up under ``server="other"``).
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pcapdns.errors import SourcePermission, UsageError
from pcapdns.live.runner import Tick
from pcapdns.stream import Stream
from pcapdns.tables.totals import LATENCY_BUCKETS

MAX_SERVERS = 1000


class Exporter(Collector):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.by_server: Counter[tuple[str, str]] = Counter()
        self.summary: dict[str, Any] = stream.summary()
        self.drops = {"kernel": 0, "queue": 0}

    def serve(self, host: str, port: int) -> None:
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except PermissionError:
            raise SourcePermission(
                f"--metrics: cannot listen on port {port}", "pick a port above 1023"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"--metrics: {host}:{port} is already in use") from None
            raise UsageError(f"--metrics: cannot listen on {host}:{port} ({exc.strerror})") from None

    def update(self, tick: Tick) -> None:
        t = tick.settled
        if t.height:
            per = t.group_by("server", "status").len()
            for server, status, n in per.select(
                pl.col("server").cast(pl.String), pl.col("status").cast(pl.String), "len"
            ).iter_rows():
                known = len({s for s, _ in self.by_server}) < MAX_SERVERS or any(
                    s == server for s, _ in self.by_server
                )
                self.by_server[(server if known else "other", status)] += n
        self.summary = tick.summary
        self.drops = {"kernel": tick.kernel_drops, "queue": tick.queue_drops}

    def collect(self) -> Iterator[Metric]:
        s = self.summary
        frames = CounterMetricFamily("pcapdns_frames", "Frames captured and decoded")
        frames.add_metric([], s["frames"])
        yield frames
        yield _by_label("pcapdns_queries", "DNS queries by QTYPE", "qtype", s["qtypes"])
        yield _by_label("pcapdns_responses", "DNS responses by RCODE", "rcode", s["rcodes"])
        per_server = CounterMetricFamily(
            "pcapdns_transactions", "Settled transactions by server and status", labels=["server", "status"]
        )
        for (server, status), n in sorted(self.by_server.items()):
            per_server.add_metric([server, status], n)
        yield per_server
        yield _by_label(
            "pcapdns_unanswered", "Queries without a response, by reason", "reason", s["unanswered_by_reason"]
        )
        yield _by_label(
            "pcapdns_malformed", "Malformed DNS messages by reason", "reason", s["malformed_reasons"]
        )
        yield _by_label("pcapdns_decode_issues", "Problems below DNS by reason", "reason", s["decode_issues"])
        yield _by_label("pcapdns_dropped", "Frames lost before analysis", "where", self.drops)
        totals = self.stream.totals
        counts = totals.latency_buckets.tolist()
        cumulative, running = [], 0
        for bound, n in zip([*(str(b) for b in LATENCY_BUCKETS), "+Inf"], counts, strict=True):
            running += n
            cumulative.append((bound, running))
        latency = HistogramMetricFamily(
            "pcapdns_latency_seconds", "Query to response time of settled transactions"
        )
        latency.add_metric([], cumulative, sum_value=totals.rtt_sum_s)
        yield latency


def _by_label(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in values.items():
        family.add_metric([key], n)
    return family
